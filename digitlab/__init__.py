"""digitlab: the core of the product (networks, checkpoints, pure domain functions, request schemas).

Imports torch and pydantic, never TorchServe: training, handlers, clients and tests import it.
"""
