"""The client SDK for the served models: one `Client` interface, over REST (`RestClient`) or gRPC (`GrpcClient`).

    from digitlab.clients import RestClient, GrpcClient      # installed: pip install ".[client]"
    from clients import RestClient, GrpcClient               # in the repository

    with GrpcClient("127.0.0.1:7070") as client:
        print(client.palindrome([1, 2, 3, 2]).digit)
        for frame in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=24):
            print(frame.index, frame.digit)

Over TLS the address says so, `https://host:port` (REST) or `grpcs://host:port` (gRPC), and `ca=` (else
$DIGITLAB_CA, else the local door's .door/tls/ca.pem for a server on this machine) names the CA that
signed the server's certificate; verification is never off (tls.py).

Torch-free: it depends on `digitlab.schemas` (the shared request/response shapes, pydantic only), requests,
grpcio and the generated stubs, never on handlers, training or torch. Modules here import each other
relatively, because the same directory is `clients` in the repository and `digitlab.clients` when installed.
The CLI is `digitlab` (installed) or `python -m clients` (repository).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ServerError, Unreachable

if TYPE_CHECKING:
    from .base import Client
    from .grpc import GrpcClient
    from .rest import RestClient

__all__ = ["Client", "GrpcClient", "RestClient", "ServerError", "Unreachable"]
_LAZY = {"Client": "base", "RestClient": "rest", "GrpcClient": "grpc"}  # imported on first use: grpc is slow to load


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
