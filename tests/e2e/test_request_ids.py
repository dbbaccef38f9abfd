"""The SDK's request ids against the session's real TorchServe, straight and through a door (nginx on free
ports): the id each call sends is the one `last_request_id` and a refusal's `ServerError.request_id` name,
over REST and over gRPC, the worker's refusals included."""

from __future__ import annotations

import itertools

import pytest

from clients import grpc as grpc_client_module
from clients import rest as rest_client_module
from clients.errors import ServerError
from clients.grpc import GrpcClient
from clients.rest import RestClient
from ops import door as ops_door
from tests.e2e.doors import open_door

pytestmark = pytest.mark.server
TIMEOUT = 30
GOOD, BAD = [1, 2, 2], "12x"  # a palindrome's first digits; digits that are no digits (refused by the worker)


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """The ids the SDK sends, in order: "sdk-1", "sdk-2", ... (recorded instead of random)."""
    ids: list[str] = []
    counter = itertools.count(1)

    def new_request_id() -> str:
        ids.append(f"sdk-{next(counter)}")
        return ids[-1]

    monkeypatch.setattr(rest_client_module, "new_request_id", new_request_id)
    monkeypatch.setattr(grpc_client_module, "new_request_id", new_request_id)
    return ids


@pytest.fixture(scope="module")
def door(server, tmp_path_factory):
    if (missing := ops_door.missing_nginx()) is not None:
        pytest.skip(f"no door: {missing}")
    running = open_door(server, tmp_path_factory.mktemp("request_ids_door"))
    try:
        yield running
    finally:
        ops_door.stop(running.runtime)


def test_straight_to_torchserve_a_grpc_call_names_the_id_it_sent(grpc_client, sent):
    """TorchServe's own gRPC port answers no x-request-id, and passes no metadata to the worker: the id reaches
    the model as the input "request_id", so an in-band refusal names the id sent, as its log lines do."""
    assert grpc_client.palindrome(GOOD).digit == 1
    assert grpc_client.last_request_id == sent[-1] == "sdk-1"
    with pytest.raises(ServerError) as refused:
        grpc_client.palindrome(BAD)
    assert grpc_client.last_request_id == sent[-1] == "sdk-2" and refused.value.status == 400
    assert refused.value.request_id == "sdk-2" and "(request sdk-2)" in str(refused.value)


def door_client(door, transport: str, key: str) -> RestClient | GrpcClient:
    if transport == "rest":
        return RestClient(door.url, key, timeout=TIMEOUT)
    return GrpcClient(door.target, key, timeout=TIMEOUT)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_through_the_door_the_id_sent_names_the_answer_the_stream_and_the_refusals(door, sent, transport):
    """The door echoes the SDK's id (REST header, gRPC initial metadata): `last_request_id` is the id sent, for
    an answer, a refusal and a stream (from its first frame on). A refusal names it too: the door's own (a
    wrong key), and the worker's (over gRPC the id reached it as the input "request_id")."""
    with door_client(door, transport, door.key) as client:
        assert client.palindrome(GOOD).digit == 1
        assert client.last_request_id == sent[-1] == "sdk-1"
        with pytest.raises(ServerError) as refused:
            client.palindrome(BAD)
        assert client.last_request_id == sent[-1] == "sdk-2" and refused.value.status == 400
        assert refused.value.request_id == "sdk-2"  # the worker's refusal, with the id the door logged
        frames = client.interpolate_stream({"seed": 0, "index": 0}, {"seed": 0, "index": 1}, steps=2)
        assert next(frames).index == 0 and client.last_request_id == sent[-1] == "sdk-3"
        assert [frame.index for frame in frames] == [1]
    with door_client(door, transport, "wrong-key-of-sufficient-length") as stranger:
        with pytest.raises(ServerError) as refused:
            stranger.palindrome(GOOD)
    assert refused.value.status in (401, "UNAUTHENTICATED") and refused.value.request_id == sent[-1] == "sdk-4"
    assert stranger.last_request_id == "sdk-4" and "(request sdk-4)" in str(refused.value)
