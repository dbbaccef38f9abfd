"""The palindrome handler with a tiny model and TorchServe's real Context object (no server)."""

import json
import logging

import pytest
import torch

from digitlab import serving
from digitlab.checkpoint import save_checkpoint
from digitlab.networks import PalindromeConfig, PalindromeNet
from digitlab.palindrome import predict_probabilities
from handlers.common import VERSION_HEADER, WORKER_METRICS_LOGGER
from handlers.palindrome_handler import PalindromeHandler
from tests.handlers.context import REST_HEADERS, make_context, start_batch, statuses

META = {"min_length": 3, "max_length": 6, "accuracy": {"3": 1.0, "6": 0.5}, "history": [{"step": 1}]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = PalindromeNet(PalindromeConfig(cell="rnn", hidden_dim=8)).eval()
    model_dir = tmp_path_factory.mktemp("model")
    save_checkpoint(model_dir / "tiny.pt", model, meta=META)
    context = make_context(model_dir, "tiny.pt", batch_size=8)
    handler = PalindromeHandler()
    handler.initialize(context)
    return model, handler, context


def run(handler, context, bodies):
    batch = [{"body": b} for b in bodies]
    start_batch(context, len(batch))
    return [json.loads(r) for r in handler.handle(batch, context)], statuses(context, len(batch))


def test_initialize_picks_cpu_and_reads_the_served_range(tiny):
    _, handler, _ = tiny
    assert handler.initialized and handler.device == torch.device("cpu")
    assert handler.service.limits() == {"min_length": 3, "max_length": 6}


def test_one_batch_of_mixed_lengths_and_forms(tiny):
    model, handler, context = tiny
    bodies = [{"digits": [1, 2, 2]}, b'{"digits": "354345"}', {"digits": [9, 0, 0, 0, 0]}]
    answers, codes = run(handler, context, bodies)
    assert codes == [200, 200, 200]
    expected = predict_probabilities(model, [[1, 2, 2], [3, 5, 4, 3, 4, 5], [9, 0, 0, 0, 0]])
    for answer, probs, length in zip(answers, expected, (3, 6, 5)):
        assert answer["model"] == "rnn" and answer["length"] == length
        assert answer["digit"] == int(probs.argmax())
        assert answer["probabilities"] == pytest.approx(probs.tolist(), abs=1e-6)
    assert context.get_response_content_type(0) == "application/json"


def test_bad_requests_get_their_own_400_and_the_rest_of_the_batch_is_served(tiny):
    _, handler, context = tiny
    answers, codes = run(handler, context, [b"{oops", {"digits": [1, 2, 2]}, {"digits": [1, 2, 3, 4, 5, 6, 7]}])
    assert codes == [400, 200, 400]
    assert "not valid JSON" in answers[0]["message"]
    assert answers[1]["digit"] in range(10)
    assert "this model accepts 3 to 6" in answers[2]["message"]


def test_a_request_without_a_body_is_refused(tiny):
    _, handler, context = tiny
    start_batch(context, 1)
    answer = json.loads(handler.handle([{"x-www-form-field": b""}], context)[0])
    assert statuses(context, 1) == [400] and "Content-Type: application/json" in answer["message"]


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("gpu_id", [None, 0, "1"])
def test_the_worker_loads_on_its_assigned_gpu_only_when_cuda_exists(tmp_path, monkeypatch, cuda, gpu_id):
    """Both branches of device selection, on any host: torch.cuda is mocked, and so is the loader, which
    would need a real GPU to move weights to."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    loaded = []
    monkeypatch.setattr(serving, "load", lambda kind, checkpoint, options, device: loaded.append(device))
    handler = PalindromeHandler()
    handler.initialize(make_context(tmp_path, "m.pt", gpu_id=gpu_id))
    expected = torch.device(f"cuda:{gpu_id}") if cuda and gpu_id is not None else torch.device("cpu")
    assert handler.device == expected and loaded == [expected]


def test_a_batch_adds_no_metric_or_log_line_of_its_own(tiny, monkeypatch, caplog):
    """TorchServe times every batch itself (PredictionTime, per model in /metrics); a second per-batch metric
    or an INFO line per batch is work the worker does for nothing at thousands of requests a second."""
    _, handler, context = tiny
    recorded = []
    monkeypatch.setattr(context.metrics, "add_time", lambda *args, **kw: recorded.append(args))
    with caplog.at_level(logging.INFO):
        run(handler, context, [{"digits": [1, 2, 2]}, {"digits": [3, 4, 4]}])
    assert recorded == [] and [r for r in caplog.records if r.levelno < logging.WARNING] == []
    assert logging.getLogger().level == logging.WARNING  # the worker's own per-batch line, on the root logger
    assert logging.getLogger(WORKER_METRICS_LOGGER).isEnabledFor(logging.INFO)  # /metrics is built from these


def test_a_describe_request_gets_the_checkpoints_meta_and_its_neighbours_their_answers(tiny):
    _, handler, context = tiny
    start_batch(context, 2, headers=[{"describe": "True"}, {**REST_HEADERS}])
    described, answered = handler.handle([{}, {"body": b'{"digits": [1, 2, 2]}'}], context)
    card = json.loads(described)
    assert card["version"] == "1.0" and card["kind"] == "palindrome"
    assert card["limits"] == {"min_length": 3, "max_length": 6}
    assert card["palindrome"]["config"] == {"cell": "rnn", "hidden_dim": 8, "encoding": "scalar", "num_classes": 10}
    meta = card["palindrome"]["meta"]
    assert "history" not in meta and meta["accuracy"] == {"lengths": [3, 6], "min": 0.5, "mean": 0.75}
    assert json.loads(answered)["length"] == 3 and statuses(context, 2) == [200, 200]
    assert handler.describe_handle() == described


def test_grpc_answers_are_marked_final_and_rest_answers_are_not(tiny):
    _, handler, context = tiny
    rest_headers = {"url_path": "", "Content-Type": "application/json"}
    start_batch(context, 2, headers=[{}, rest_headers])  # a gRPC request carries no HTTP headers
    handler.handle([{"data": b'{"digits": [1, 2, 2]}'}, {"body": {"digits": [1, 2, 2]}}], context)
    assert context.get_response_headers(0)["ts_stream_next"] == "false"
    assert "ts_stream_next" not in context.get_response_headers(1)


def test_every_answer_says_which_model_version_gave_it(tiny):
    """A rolling update's switch from one model version to the next shows in each answer's headers."""
    _, handler, context = tiny
    run(handler, context, [{"digits": [1, 2, 2]}, b"{oops"])
    versions = [context.request_processor[i].get_response_header(VERSION_HEADER) for i in range(2)]
    assert versions == [handler.version] * 2 and handler.version
