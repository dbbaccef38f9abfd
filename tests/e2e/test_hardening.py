"""Findings against a real TorchServe, each as a regression test that failed before its fix (SECURITY.md)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from clients.rest import RestClient
from clients.ts_grpc import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.server
TIMEOUT = 30
GOOD = {"digits": [4, 5, 5]}
INTERPOLATION = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 3}


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.endpoints.grpc_inference) as channel:
        yield inference_pb2_grpc.InferenceAPIsServiceStub(channel)


def grpc_replies(server, stub, model: str, inputs: dict[str, bytes], unary: bool = False) -> list[dict]:
    request = inference_pb2.PredictionsRequest(model_name=model, input=inputs)
    metadata = [("authorization", f"Bearer {server.key()}")]
    if unary:
        return [json.loads(stub.Predictions(request, metadata=metadata, timeout=TIMEOUT).prediction)]
    return [json.loads(r.prediction) for r in stub.StreamPredictions(request, metadata=metadata, timeout=TIMEOUT)]


@pytest.mark.parametrize("model", ["palindrome", "sample", "interpolate"])
def test_a_grpc_input_named_url_path_is_refused_and_kills_no_worker(server, stub, model):
    """Finding 1: the input made the handler take the call for REST and the frontend restart the worker."""
    body = json.dumps(GOOD if model == "palindrome" else {"n": 1} if model == "sample" else INTERPOLATION)
    pids = server.worker_pids(model)
    for unary in (False, True, False):
        [reply] = grpc_replies(server, stub, model, {"data": body.encode(), "url_path": b"/predictions/x"}, unary)
        assert reply["code"] == 400 and "exactly one input" in reply["message"]
    assert server.worker_pids(model) == pids


@pytest.mark.parametrize("truthy", [1, "yes", "on", "true"])
def test_a_unary_call_with_a_truthy_stream_is_refused_not_streamed(server, stub, truthy):
    """Finding 2: a non-boolean `stream` was taken for true and the unary call stalled the model."""
    pids = server.worker_pids("interpolate")
    [reply] = grpc_replies(
        server, stub, "interpolate", {"data": json.dumps({**INTERPOLATION, "stream": truthy}).encode()}, unary=True
    )
    assert reply["code"] == 400 and "stream" in reply["message"]
    with RestClient(server.endpoints.inference, server.key(), timeout=TIMEOUT) as client:
        answer = client.predict("interpolate", INTERPOLATION)
    assert len(answer["frames"]) == 3 and server.worker_pids("interpolate") == pids


def test_unparsable_bodies_do_not_fail_their_neighbours(server):
    """Finding 3: one body that failed to parse unexpectedly failed its whole batch with 503."""
    hostile = [b"[" * 1000 + b"]" * 1000, b'{"digits": [' + b"9" * 5000 + b"]}", b'{"digits": "\xff"}']
    stop = threading.Event()
    url = f"{server.endpoints.inference}/predictions/palindrome"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.key()}"}

    def attacker() -> list[int]:
        codes = []
        with requests.Session() as session:
            while not stop.is_set():
                for body in hostile:
                    codes.append(session.post(url, data=body, headers=headers, timeout=TIMEOUT).status_code)
        return codes

    def user(_: int) -> list[int]:
        with requests.Session() as session:
            return [session.post(url, json=GOOD, headers=headers, timeout=TIMEOUT).json()["digit"] for _ in range(40)]

    with ThreadPoolExecutor(10) as pool:
        attacks = pool.submit(attacker)
        answers = [d for ds in pool.map(user, range(8)) for d in ds]
        stop.set()
    assert answers == [4] * len(answers)  # every neighbour served, and served right
    assert set(attacks.result()) == {400}


@pytest.mark.parametrize(
    "url", ["file:///tmp/evil.war", "http://127.0.0.1:9/evil.war", "https://example.invalid/x.war"]
)
def test_the_management_key_cannot_register_a_workflow(server, url):
    """Finding 4: POST /workflows fetched and ran an archive from any URL, despite enable_model_api=false."""
    resp = requests.post(
        f"{server.endpoints.management}/workflows",
        params={"url": url},
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {server.key('management')}"},
    )
    assert resp.status_code == 404 and "does not match any allowed URL" in resp.json()["message"]
    assert not any((server.workdir / "workflows").iterdir())


def test_the_management_key_cannot_register_a_model(server):
    resp = requests.post(
        f"{server.endpoints.management}/models",
        params={"url": "palindrome.mar"},
        timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {server.key('management')}"},
    )
    assert resp.status_code == 405 and "not allowed" in resp.json()["message"]  # enable_model_api=false


def test_logs_grow_by_a_bounded_amount_per_request(server):
    """Finding 6: DEBUG logging wrote 1-7 KB per request, and the console log was never rotated."""
    logs = [*server.workdir.glob("logs/*.log"), server.workdir / "console.log"]
    before = sum(p.stat().st_size for p in logs)
    n = 200
    with RestClient(server.endpoints.inference, server.key()) as client:  # one session for all n
        for _ in range(n):
            client.predict("palindrome", GOOD)
    per_request = (sum(p.stat().st_size for p in logs) - before) / n
    assert per_request < 400, f"{per_request:.0f} bytes of logs per request"


def test_readiness_needs_no_key_and_says_ready(server):
    resp = requests.get(f"{server.endpoints.ready}/ready", timeout=TIMEOUT)
    assert resp.status_code == 200 and resp.json()["status"] == "ready"
    assert set(resp.json()["models"]) == set(server.models)
