"""One hostile request cannot fail its neighbours, forge its transport or stall a worker (no server).

Each case here was first found against a real TorchServe and failed before the fix.
"""

import io
import json
import socket

import pytest
import torch

from digitlab.checkpoint import save_checkpoint
from digitlab.networks import (
    ClassifierConfig,
    Generator,
    GeneratorConfig,
    MnistClassifier,
    PalindromeConfig,
    PalindromeNet,
)
from handlers import common
from handlers.common import STREAM_NEXT, is_grpc
from handlers.interpolate_handler import InterpolateHandler
from handlers.palindrome_handler import PalindromeHandler
from tests.handlers.context import GRPC_HEADERS, REST_HEADERS, make_context, start_batch, statuses

GOOD = b'{"digits": [4, 5, 5]}'
HOSTILE_BODIES = {
    "nested 1,000 deep": b"[" * 1000 + b"]" * 1000,
    "nested object 100 deep": b'{"a":' * 100 + b"1" + b"}" * 100,
    "5,000-digit integer": b'{"digits": [' + b"9" * 5000 + b"]}",
    "invalid UTF-8": b'{"digits": "\xff\xfe"}',
    "NaN": b'{"digits": NaN}',
    "not JSON": b"digits=1232",
}


@pytest.fixture(scope="module")
def palindrome(tmp_path_factory):
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("model")
    save_checkpoint(
        model_dir / "tiny.pt",
        PalindromeNet(PalindromeConfig(cell="rnn", hidden_dim=8)).eval(),
        meta={"min_length": 3, "max_length": 6},
    )
    context = make_context(model_dir, "tiny.pt", batch_size=8)
    handler = PalindromeHandler()
    handler.initialize(context)
    return handler, context


@pytest.fixture(scope="module")
def interpolate(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan")
    save_checkpoint(path / "generator.pt", Generator(GeneratorConfig(hidden=(16, 32))).eval())
    save_checkpoint(path / "classifier.pt", MnistClassifier(ClassifierConfig(channels=(4, 8), feature_dim=16)))
    context = make_context(path, "generator.pt", batch_size=4, options={"max_steps": 6})
    handler = InterpolateHandler()
    handler.initialize(context)
    return handler, context


def handle(handler, context, rows, headers=None):
    start_batch(context, len(rows), headers)
    return handler.handle(rows, context), statuses(context, len(rows))


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_an_unparsable_body_is_its_own_400_and_its_batch_is_served(palindrome, name):
    handler, context = palindrome
    answers, codes = handle(handler, context, [{"body": GOOD}, {"body": HOSTILE_BODIES[name]}, {"body": GOOD}])
    assert codes == [200, 400, 200]
    assert json.loads(answers[1])["message"]
    assert json.loads(answers[0])["digit"] == json.loads(answers[2])["digit"]


def test_the_worker_parses_json_itself():
    """TorchServe's own JSON decoding has no depth limit: the handler switches it off in its worker."""
    import os

    assert os.environ.get("TS_DECODE_INPUT_REQUEST") == "false"


def test_a_grpc_input_named_like_a_rest_header_does_not_pass_for_rest(palindrome):
    handler, context = palindrome
    forged = {**GRPC_HEADERS, "url_path": {"content-type": None}}  # what input "url_path" becomes
    assert is_grpc(forged) and not is_grpc(REST_HEADERS)
    answers, codes = handle(
        handler, context, [{"data": GOOD, "url_path": b"x"}, {"data": GOOD}], headers=[forged, GRPC_HEADERS]
    )
    assert codes == [400, 200]
    assert "exactly one input" in json.loads(answers[0])["message"]
    for idx in (0, 1):  # both still end their gRPC call: without it the frontend kills the worker
        assert context.get_response_headers(idx)[STREAM_NEXT] == "false"


def test_a_grpc_request_names_its_id_in_the_input_request_id_when_it_is_safe(palindrome):
    """TorchServe passes no gRPC metadata to the worker: the id arrives as an input beside "data" (the SDK sends
    it there and as the door's x-request-id). An unsafe one is not carried: TorchServe's own id instead."""
    handler, context = palindrome
    with_id = {**GRPC_HEADERS, "request_id": {"content-type": None}}  # each input is a header entry too
    rows = [
        {"data": b'{"digits": "12x"}', "request_id": b"trace-7"},
        {"data": b'{"digits": "12x"}', "request_id": b"bad id!"},
        {"data": GOOD, "request_id": b"trace-8"},
        {"request_id": b"trace-9"},
    ]
    answers, codes = handle(handler, context, rows, headers=[with_id] * 4)
    assert codes == [400, 400, 200, 400]
    assert [json.loads(answers[i])["request_id"] for i in (0, 1, 3)] == ["trace-7", "req-1", "trace-9"]
    assert "exactly one input" in json.loads(answers[3])["message"]  # an id without a body is still refused
    assert "digit" in json.loads(answers[2])  # served (a tiny untrained model: any digit)


def test_rest_query_parameters_and_form_fields_are_refused(palindrome):
    handler, context = palindrome
    answers, codes = handle(handler, context, [{"body": GOOD, "stream": b"true"}, {"file": GOOD}])
    assert codes == [400, 400]
    assert "query parameters" in json.loads(answers[0])["message"]
    assert "no JSON body" in json.loads(answers[1])["message"]


def test_an_unexpected_error_fails_only_its_own_request(palindrome, monkeypatch):
    handler, context = palindrome
    real_predict = handler.predict

    def predict(requests):  # a request that trips a bug nobody has found yet
        if any(r.digits == [6, 6, 6] for r in requests):
            raise RuntimeError("boom")
        return real_predict(requests)

    monkeypatch.setattr(handler, "predict", predict)
    answers, codes = handle(handler, context, [{"body": GOOD}, {"body": b'{"digits": [6, 6, 6]}'}, {"body": GOOD}])
    assert codes == [200, 500, 200]
    error = json.loads(answers[1])
    assert error["type"] == "InternalError" and "req-1" in error["message"]


@pytest.mark.parametrize("truthy", ["true", "1", '"yes"', '"on"', '"true"'])
def test_only_the_literal_true_streams(interpolate, truthy):
    handler, context = interpolate
    context.cl_socket, frontend = socket.socketpair()  # where a worker sends the frames before the last
    body = f'{{"start": {{"seed": 0, "index": 0}}, "end": {{"seed": 0, "index": 1}}, "steps": 3, "stream": {truthy}}}'
    answers, codes = handle(handler, context, [{"body": body.encode()}])
    if truthy == "true":
        assert codes == [200] and json.loads(answers[0])["index"] == 2  # streamed: the last frame is the answer
        assert b'"index":0' in frontend.recv(1 << 20)  # and frame 0 went out before it
    else:
        assert codes == [400] and "stream" in json.loads(answers[0])["message"]


def test_an_interpolation_that_fails_unexpectedly_fails_alone(interpolate, monkeypatch):
    handler, context = interpolate
    real = handler.service.path

    def path(request):
        if request.steps == 5:
            raise RuntimeError("boom")
        return real(request)

    monkeypatch.setattr(handler.service, "path", path)
    body = '{{"start": {{"seed": 0, "index": 0}}, "end": {{"seed": 0, "index": 1}}, "steps": {}}}'
    rows = [{"body": body.format(n).encode()} for n in (3, 5, 4)]
    answers, codes = handle(handler, context, rows)
    assert codes == [200, 500, 200]
    assert [len(json.loads(a)["frames"]) for a in (answers[0], answers[2])] == [3, 4]


def test_the_clients_request_id_names_the_answer_and_its_errors(palindrome, monkeypatch):
    """A safe X-Request-Id (the door passes the client's, or one it made) is the id of the request's answer
    header, its error body and its log line; an unsafe one is replaced by TorchServe's own."""
    handler, context = palindrome
    real_predict = handler.predict

    def predict(requests):  # [6, 6, 6] trips a bug
        if any(r.digits == [6, 6, 6] for r in requests):
            raise RuntimeError("boom")
        return real_predict(requests)

    monkeypatch.setattr(handler, "predict", predict)
    logged = io.StringIO()
    monkeypatch.setattr(common.log.handlers[0], "stream", logged)  # the worker's JSON lines
    rows = [{"body": GOOD}, {"body": b'{"digits": [1, 2]}'}, {"body": b'{"digits": [6, 6, 6]}'}]
    sent_ids = ["client-id.1_a", "bad id with spaces", "x" * 128]
    start_batch(context, 3, [{**REST_HEADERS, "x-request-id": i} for i in sent_ids])
    answers = handler.handle(rows, context)
    assert [context.get_response_headers(idx)["X-Request-Id"] for idx in range(3)] == [
        "client-id.1_a",
        "req-1",
        "x" * 128,
    ]
    assert json.loads(answers[1])["request_id"] == "req-1"  # a refusal names the id too
    failed = json.loads(answers[2])
    assert failed["type"] == "InternalError" and failed["request_id"] == "x" * 128
    (line,) = [json.loads(line) for line in logged.getvalue().splitlines()]
    assert line["request_id"] == "x" * 128 and line["level"] == "ERROR" and "boom" in line["exception"]
