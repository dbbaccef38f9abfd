"""End to end against a real TorchServe on 127.0.0.1: REST and gRPC, good and bad input, auth."""

import json

import pytest
import requests
import torch

from clients.errors import ServerError
from clients.grpc import GrpcClient
from digitlab import catalog
from digitlab.checkpoint import read_checkpoint
from digitlab.palindrome import palindrome_batch

pytestmark = pytest.mark.server
TIMEOUT = 10
CHECKPOINTS = {"palindrome": "weights/palindrome_lstm.pt", "palindrome_rnn": "weights/palindrome_rnn.pt"}


def served_lengths(model: str) -> tuple[int, int]:
    """The range the model validates against: its checkpoint's trained range."""
    meta = read_checkpoint(CHECKPOINTS[model])["meta"]
    return meta["min_length"], meta["max_length"]


MAX_LENGTH = served_lengths("palindrome")[1]


def fresh_prefixes(seed: int, max_length: int, per_length: int = 4):
    """Fresh (digits, missing digit) pairs for every length 3-15 and the model's longest."""
    generator = torch.Generator().manual_seed(seed)
    for length in sorted({*range(3, 16), max_length}):
        inputs, targets = palindrome_batch(per_length, length, generator)
        yield from zip(inputs.tolist(), targets.tolist())


def post(server, body: bytes, token: str | None = "inference", model="palindrome", content_type="application/json"):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {server.key(token) if token in ('inference', 'management') else token}"
    return requests.post(
        f"{server.endpoints.inference}/predictions/{model}", data=body, headers=headers, timeout=TIMEOUT
    )


@pytest.mark.parametrize("model", ["palindrome", "palindrome_rnn"])
def test_rest_answers_fresh_palindromes_of_every_length(rest_client, model):
    for digits, expected in fresh_prefixes(seed=1, max_length=served_lengths(model)[1]):
        answer = rest_client.predict(model, {"digits": digits})
        assert answer["digit"] == expected, digits
        assert answer["length"] == len(digits) and len(answer["probabilities"]) == 10
        assert answer["model"] == ("lstm" if model == "palindrome" else "rnn")
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)


def test_grpc_answers_fresh_palindromes_of_every_length(grpc_client):
    for digits, expected in fresh_prefixes(seed=2, max_length=MAX_LENGTH):
        answer = grpc_client.predict("palindrome", {"digits": "".join(map(str, digits))})
        assert answer["digit"] == expected, digits


BAD_BODIES = {
    "non-JSON": b"digits=1232",
    "JSON but not an object": b"[1, 2, 3, 2]",
    "wrong type": b'{"digits": 1232}',
    "digit out of range": b'{"digits": [1, 2, 12, 2]}',
    "not a palindrome prefix": b'{"digits": [1, 2, 3, 4]}',
    "too short": b'{"digits": [1, 2]}',
    "too long": json.dumps({"digits": [1] * (MAX_LENGTH + 1)}).encode(),
    "empty digits": b'{"digits": []}',
    "empty body": b"",
    "unknown field": b'{"digits": [1, 2, 2], "temperature": 2}',
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_serving(server, rest_client, name):
    pids = server.worker_pids("palindrome")
    resp = post(server, BAD_BODIES[name])
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()  # the error body, also where TorchServe answers before the handler sees the request
    assert error["code"] == resp.status_code and error["message"], error
    assert rest_client.predict("palindrome", {"digits": [4, 5, 5]})["digit"] == 4
    assert server.worker_pids("palindrome") == pids  # no worker died and was replaced


def test_a_huge_body_is_refused_before_it_reaches_a_worker(server):
    resp = post(server, json.dumps({"digits": [1] * 100_000}).encode())
    assert resp.status_code == 413


def test_grpc_bad_input_is_a_client_error(grpc_client):
    with pytest.raises(ServerError) as err:
        grpc_client.predict("palindrome", {"digits": [1, 2, 3, 4]})
    assert err.value.status == 400 and "read the same backwards" in err.value.message


def test_requests_without_a_valid_token_are_refused(server):
    for token in (None, "wrong-token", "management"):
        resp = post(server, b'{"digits": [1, 2, 2]}', token=token)
        assert resp.status_code in (400, 401, 403), token
        assert "Token Authorization failed" in resp.text
    with GrpcClient(server.endpoints.grpc_inference, "wrong-token", timeout=TIMEOUT) as client:
        with pytest.raises(ServerError) as err:
            client.predict("palindrome", {"digits": [1, 2, 2]})
    assert err.value.status == "PERMISSION_DENIED"


def test_metrics_are_exposed_for_prometheus(server):
    resp = requests.get(f"{server.endpoints.metrics}/metrics", timeout=TIMEOUT)
    assert resp.status_code == 200 and "ts_inference_requests_total" in resp.text


def test_every_batch_is_timed_per_model(server, rest_client):
    """TorchServe's own PredictionTime gauge (the handler adds no duplicate of it)."""
    for model in ("palindrome", "palindrome_rnn"):
        rest_client.predict(model, {"digits": [4, 5, 5]})
    text = requests.get(f"{server.endpoints.metrics}/metrics", timeout=TIMEOUT).text
    assert "HandlerTime{" not in text
    gauges = [line for line in text.splitlines() if line.startswith("PredictionTime{")]
    for model in ("palindrome", "palindrome_rnn"):
        [value] = [float(line.rsplit(" ", 1)[1]) for line in gauges if f'ModelName="{model}"' in line]
        assert value > 0, text


@pytest.mark.parametrize("model", ["palindrome", "palindrome_rnn", "sample", "interpolate"])
def test_the_management_api_describes_what_each_model_can_do(server, model):
    resp = requests.get(
        f"{server.endpoints.management}/models/{model}",
        params={"customized": "true"},
        headers={"Authorization": f"Bearer {server.key('management')}"},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    [description] = resp.json()
    card = description["customizedMetadata"]  # the frontend parses the JSON the handler returns
    assert card["kind"] == model.removesuffix("_rnn") and card["version"] == "1.0"
    if model in CHECKPOINTS:
        meta = read_checkpoint(CHECKPOINTS[model])["meta"]
        assert card["limits"] == {"min_length": meta["min_length"], "max_length": meta["max_length"]}
        assert card["palindrome"]["meta"]["accuracy"]["lengths"] == [meta["min_length"], meta["max_length"]]
        assert card["palindrome"]["meta"]["train"] == meta["train"]
    else:
        assert card["generator"]["meta"]["fid"] == read_checkpoint("weights/generator.pt")["meta"]["fid"]
        assert card["classifier"]["meta"]["test_accuracy"] > 0.9 and card["digits"]["budget"] == 4096


def test_grpc_stream_call_to_a_unary_model_gets_one_answer_and_no_worker_dies(server, grpc_client):
    pids = server.worker_pids("palindrome")
    messages = list(grpc_client.stream("palindrome", {"digits": [6, 0, 0]}))
    assert [m["digit"] for m in messages] == [6]
    assert server.worker_pids("palindrome") == pids


def test_every_rest_answer_names_its_model_version(server):
    """An answer's headers say which model version gave it (TorchServe sends a refusal's body without them)."""
    for model in server.models:
        resp = requests.post(
            f"{server.endpoints.inference}/predictions/{model}",
            json=catalog.model(model).canary,  # its smallest valid request
            headers={"Authorization": f"Bearer {server.key()}"},
            timeout=TIMEOUT,
        )
        assert resp.status_code == 200 and resp.headers["X-Model-Version"] == "1.0", (model, dict(resp.headers))
