"""A real gRPC server on a free loopback port, for the unit tests that talk to one (the SDK, the supervisor)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc


@contextmanager
def grpc_server(add: Callable[[grpc.Server], None], credentials: grpc.ServerCredentials | None = None) -> Iterator[int]:
    """A server with what `add(server)` registers, plaintext or with `credentials` (TLS) -> its port; stopped after."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add(server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)
