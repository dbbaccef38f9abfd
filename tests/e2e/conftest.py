"""Clients of the session's real TorchServe (tests/conftest.py starts it), one per test, closed after it."""

from __future__ import annotations

import pytest

from clients.grpc import GrpcClient
from clients.rest import RestClient

CLIENT_TIMEOUT = 30  # seconds per call: a 64-frame interpolation on a busy 2-core machine, with room to spare


@pytest.fixture
def rest_client(server):
    with RestClient(server.endpoints.inference, server.key(), timeout=CLIENT_TIMEOUT) as client:
        yield client


@pytest.fixture
def grpc_client(server):
    with GrpcClient(server.endpoints.grpc_inference, server.key(), timeout=CLIENT_TIMEOUT) as client:
        yield client
