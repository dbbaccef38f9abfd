"""digitlab: the core of the product (networks, checkpoints, pure domain functions, request schemas).

Imports torch and pydantic, never TorchServe: training, handlers, clients and tests import it. The modules
the client SDK needs (`constants`, `digits`, `schemas`) are torch-free; installed, the SDK itself is
`digitlab.clients` (the checkout's clients/ directory).
"""
