"""The palindrome handler with a tiny model and TorchServe's real Context object (no server)."""

import json

import pytest
import torch

from digitlab.checkpoint import save_checkpoint
from digitlab.networks import PalindromeConfig, PalindromeNet
from digitlab.palindrome import predict_probabilities
from handlers.palindrome_handler import PalindromeHandler
from tests.handler_context import make_context, start_batch, statuses


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = PalindromeNet(PalindromeConfig(cell="rnn", hidden_dim=8)).eval()
    model_dir = tmp_path_factory.mktemp("model")
    save_checkpoint(model_dir / "tiny.pt", model, meta={"min_length": 3, "max_length": 6})
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
    assert handler.validation_context() == {"min_length": 3, "max_length": 6}


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


def test_gpu_id_is_used_only_when_cuda_exists(tiny, tmp_path):
    model, _, _ = tiny
    save_checkpoint(tmp_path / "m.pt", model, meta={"min_length": 3, "max_length": 6})
    handler = PalindromeHandler()
    handler.initialize(make_context(tmp_path, "m.pt", gpu_id=0))
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert handler.device == expected and next(handler.model.parameters()).device == expected


def test_grpc_answers_are_marked_final_and_rest_answers_are_not(tiny):
    _, handler, context = tiny
    rest_headers = {"url_path": "", "Content-Type": "application/json"}
    start_batch(context, 2, headers=[{}, rest_headers])  # a gRPC request carries no HTTP headers
    handler.handle([{"data": b'{"digits": [1, 2, 2]}'}, {"body": {"digits": [1, 2, 2]}}], context)
    assert context.get_response_headers(0)["ts_stream_next"] == "false"
    assert "ts_stream_next" not in context.get_response_headers(1)
