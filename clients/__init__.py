"""Thin clients for the served models: REST (`clients.rest`), gRPC (`clients.grpc`), and a CLI (`python -m clients`).

They depend on `digitlab.schemas` (the shared request/response shapes) and the generated gRPC stubs,
never on handlers or training.
"""
