"""The serving layer is what every transport serves: the handler's bytes are the benchmark's answers."""

import json

import pytest

from benchmarks.serving.fastapi_server import reply
from benchmarks.shared.shipped import service
from digitlab import catalog
from digitlab.errors import InvalidRequest
from digitlab.serving import Binary
from handlers.palindrome_handler import PalindromeHandler
from handlers.sample_handler import SampleHandler
from tests.handlers.context import make_context, start_batch, statuses
from tools.build_archives import ROOT

BODIES = {
    "palindrome": [b'{"digits": [1, 2, 2]}', b'{"digits": "867576"}', b'{"digits": [1, 2, 3]}'],
    "sample": [b'{"n": 2, "seed": 7}', b'{"n": 1, "seed": 7, "format": "raw"}', b'{"n": 999}'],
}


@pytest.mark.parametrize(("name", "handler_class"), [("palindrome", PalindromeHandler), ("sample", SampleHandler)])
def test_the_handler_sends_what_the_benchmark_targets_compute(name, handler_class):
    spec = catalog.model(name)
    context = make_context(
        ROOT / "weights", spec.weights.removeprefix("weights/"), batch_size=4, options=spec.model_config()["handler"]
    )
    handler = handler_class()
    handler.initialize(context)
    bodies = BODIES[name]
    start_batch(context, len(bodies))
    sent = handler.handle([{"body": b} for b in bodies], context)
    served = service(name)  # as benchmarks/shared/inprocess.py and benchmarks/serving/fastapi_server.py load it
    *valid, invalid = bodies
    expected = [a.model_dump_json() for a in served.answer([served.parse(b) for b in valid])]
    assert sent[:-1] == expected and statuses(context, len(bodies)) == [200, 200, 400]
    with pytest.raises(InvalidRequest) as refused:
        served.parse(invalid)
    assert json.loads(sent[-1]) == refused.value.to_json(f"req-{len(bodies) - 1}")  # TorchServe's id: none sent


def test_the_fastapi_baseline_sends_answers_as_the_handlers_do():
    grid = reply(Binary(b"\x89PNG", "image/png", {"X-Seed": "7"}))
    assert (grid.body, grid.media_type, grid.headers["x-seed"]) == (b"\x89PNG", "image/png", "7")
    with pytest.raises(InvalidRequest):  # its exception handler answers the error body with the status
        reply(InvalidRequest("no", status=422))
