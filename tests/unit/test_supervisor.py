"""The supervisor's watch without a TorchServe: how each model is probed, and what each check decides."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from clients.ts_grpc import inference_pb2
from digitlab.errors import REQUEST_ID_HEADER, SAFE_REQUEST_ID
from digitlab.jsonlog import JsonLines
from ops import api as ops_api
from ops.api import GRPC_SERVICE, Counts, TorchServeAPI, predictions_request
from ops.state import (
    CANARY_GAP_S,
    GONE_GRACE_S,
    IDLE_PROBE_S,
    STALL_AFTER_S,
    UNREADY_GRACE_S,
    WARM_RETRY_S,
    Action,
    ModelState,
    canary,
    judge,
    note_arrivals,
    note_progress,
    note_workers,
    request_id,
    warm_ups,
)
from ops.watch import Settings, Supervisor
from tests.grpc_servers import grpc_server

# What ops/supervisor.py hard-coded before the catalog described the served models: the catalog must say the same.
CANARIES_BEFORE = {
    "palindrome": {"digits": [1, 2, 2]},
    "palindrome_rnn": {"digits": [1, 2, 2]},
    "sample": {"n": 1, "seed": 0},
    "interpolate": {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 2},
}


def test_canaries_and_warm_ups_come_from_the_catalog_as_they_were():
    for model, body in CANARIES_BEFORE.items():
        assert canary(model) == body
        calls = [("rest", body), ("grpc-stream", body), ("grpc-unary", body)]
        if model == "interpolate":  # streams: streamed too, but never over unary gRPC
            calls += [("rest", {**body, "stream": True}), ("grpc-stream", {**body, "stream": True})]
        assert warm_ups(model) == calls
    assert canary("not_in_the_catalog") is None


def test_the_hand_written_grpc_request_is_protobufs_own():
    body = json.dumps(CANARIES_BEFORE["interpolate"]).encode()
    expected = inference_pb2.PredictionsRequest(model_name="interpolate", input={"data": body})
    assert predictions_request("interpolate", body) == expected.SerializeToString()
    long = b"x" * 300  # lengths past one varint byte
    assert (
        predictions_request("m", long)
        == inference_pb2.PredictionsRequest(model_name="m", input={"data": long}).SerializeToString()
    )
    # with its id as the input the worker reads it from (map entries may come in any order: compare messages)
    parsed = inference_pb2.PredictionsRequest.FromString(predictions_request("m", body, "warmup-m-0123"))
    assert parsed == inference_pb2.PredictionsRequest(
        model_name="m", input={"data": body, "request_id": b"warmup-m-0123"}
    )


def test_metrics_counts_sum_progress_per_model():
    text = (
        'ts_queue_latency_microseconds{model_name="a",model_version="default",hostname="h",} 5.0\n'
        'ts_inference_latency_microseconds{model_name="a",model_version="default",hostname="h",} 7.0\n'
        'ts_inference_latency_microseconds{model_name="b",model_version="default",hostname="h",} 1.0\n'
        'ts_inference_requests_total{model_name="a",model_version="default",hostname="h",} 3.0\n'
    )
    counts = Counts.parse(text)
    assert counts.progress == {"a": 12.0, "b": 1.0} and counts.arrivals == {"a": 3.0}


def ready_model(name: str = "palindrome", **state) -> ModelState:
    return ModelState(name, statuses=["READY"], warmed=True, answered=True, was_ready=True, **state)


def test_a_model_the_catalog_does_not_know_is_judged_by_its_workers_alone():
    model = ModelState("unknown", statuses=["READY"])
    assert model.ready() and not model.probed
    assert judge(model, now=100.0, new_arrivals=True) is None  # no warm-up, no canary
    assert not ModelState("palindrome", statuses=["READY"]).ready()  # a known one must have answered, warmed


def test_a_ready_model_not_yet_warmed_is_warmed_and_its_warm_ups_are_not_taken_for_traffic():
    model = ModelState("interpolate", statuses=["READY"])
    assert judge(model, now=100.0, new_arrivals=False) == Action("warm") and model.warming and model.was_ready
    assert model.canaries == len(warm_ups("interpolate"))
    assert judge(model, now=100.0 + WARM_RETRY_S, new_arrivals=False) is None  # under way: not again


def test_an_idle_model_or_one_with_new_arrivals_gets_a_canary():
    idle = ready_model(progress_at=100.0)
    action = judge(idle, now=100.0 + IDLE_PROBE_S, new_arrivals=False)
    assert action == Action("canary")
    assert idle.canary_sent == 100.0 + IDLE_PROBE_S and idle.canaries == 1
    assert action.request_id == idle.canary_id and action.request_id.startswith("canary-palindrome-")
    busy = ready_model(progress_at=100.0)
    assert judge(busy, now=101.0, new_arrivals=False) is None  # busy and nothing new: no canary
    assert judge(busy, now=101.0, new_arrivals=True) == Action("canary")
    busy.canary_sent = None  # answered
    assert judge(busy, now=101.0 + CANARY_GAP_S / 2, new_arrivals=True) is None  # at most one per CANARY_GAP_S


def test_an_unanswered_canary_with_nothing_moving_restarts_the_model():
    model = ready_model(canary_sent=100.0, progress_at=90.0, cpu_at=90.0)
    assert judge(model, now=100.0 + STALL_AFTER_S - 0.1, new_arrivals=False) is None
    model.canary_id = "canary-palindrome-0123456789abcdef"  # the canary left unanswered
    action = judge(model, now=100.0 + STALL_AFTER_S, new_arrivals=False)
    assert action.kind == "restart" and action.why.endswith("workers idle") and model.restarting
    assert action.request_id == "canary-palindrome-0123456789abcdef"  # the restart names the silent canary
    assert judge(model, now=200.0, new_arrivals=True) is None  # restarting: not judged meanwhile
    busy = ready_model(canary_sent=100.0, progress_at=90.0, cpu_at=100.0 + STALL_AFTER_S - 1)  # burning CPU
    assert judge(busy, now=100.0 + STALL_AFTER_S, new_arrivals=False) is None


def test_a_worker_that_died_gets_time_to_be_replaced_before_a_restart():
    model = ready_model(canary_sent=100.0, progress_at=90.0, cpu_at=90.0)
    assert note_workers(model, None, now=99.0) is True and model.gone_since == 99.0  # gone: describe again
    assert judge(model, now=100.0 + STALL_AFTER_S, new_arrivals=False) is None
    action = judge(model, now=100.0 + GONE_GRACE_S, new_arrivals=False)
    assert "a worker died and was not replaced" in action.why


def test_workers_not_ready_and_idle_are_restarted_but_not_while_loading():
    loading = ModelState("sample", statuses=["STARTING"])
    assert judge(loading, now=100.0, new_arrivals=False) is None
    assert judge(loading, now=100.0 + 2 * UNREADY_GRACE_S, new_arrivals=False) is None  # never READY yet
    stuck = ModelState("sample", statuses=["STARTING"], was_ready=True, cpu_at=0.0)
    assert judge(stuck, now=100.0, new_arrivals=False) is None and stuck.unready_since == 100.0
    assert judge(stuck, now=100.0 + UNREADY_GRACE_S, new_arrivals=False).kind == "restart" and stuck.restarting


def test_progress_cpu_and_arrivals_are_noted_without_counting_our_own_canaries():
    model = ready_model(canaries=2, arrivals=5.0)
    note_progress(model, 10.0, now=50.0)
    assert (model.progress, model.progress_at) == (10.0, 50.0)
    assert note_workers(model, 3.5, now=51.0) is False and (model.cpu, model.cpu_at) == (3.5, 51.0)
    assert note_arrivals(model, 8.0) is True and model.arrivals == 6.0  # 8 arrived, 2 were ours
    assert note_arrivals(model, 8.0) is False


class Recorder:
    """The supervisor's pool, recording what is started instead of running it."""

    def __init__(self) -> None:
        self.started: list[tuple[str, tuple]] = []

    def submit(self, fn, *args):
        self.started.append((fn.__name__, args))


def test_the_supervisor_starts_what_a_check_asks_for(tmp_path):
    api = TorchServeAPI(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", "127.0.0.1:4")
    supervisor = Supervisor(Settings(tmp_path, api, "http://127.0.0.1:5", key_lifetime_s=3600.0))
    supervisor.pool.shutdown()
    supervisor.pool = Recorder()
    model = ready_model()
    for action in (Action("warm"), Action("canary", request_id="c-1"), Action("restart", "why", "c-1")):
        supervisor.start(model, action)
    assert supervisor.pool.started == [
        ("warm", (model,)),
        ("canary", (model, "c-1")),
        ("restart", (model, "why", "c-1")),
    ]
    supervisor.models = {"palindrome": model}
    supervisor.worker_thread_failed("palindrome")
    assert supervisor.pool.started[-1][0] == "restart" and model.restarting
    assert supervisor.ready() == (False, {"palindrome": "not ready"})  # no TorchServe running


def test_a_worker_that_fails_again_during_its_restart_is_restarted_again(tmp_path, monkeypatch):
    """TorchServe can hand the new worker the job that stalled the old one: its thread fails too, while the
    restart is still under way. That failure must not be dropped: the restart goes round once more."""
    api = TorchServeAPI(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", "127.0.0.1:4")
    supervisor = Supervisor(Settings(tmp_path, api, "http://127.0.0.1:5", key_lifetime_s=3600.0))
    supervisor.pool.shutdown()
    supervisor.pool = Recorder()
    model = ready_model()
    supervisor.models = {"palindrome": model}
    scaled: list[int] = []

    def scale(_api, _name, count):
        scaled.append(count)
        if len(scaled) == 2:  # the first new worker's thread fails while it comes up
            supervisor.worker_thread_failed("palindrome")
        return True

    monkeypatch.setattr("ops.watch.scale", scale)
    model.restarting = True
    supervisor.restart(model, "its worker thread failed")
    assert scaled == [0, 1, 0, 1] and not model.restarting  # restarted twice, then done
    assert supervisor.events[-1]["attempts"] == 2
    assert supervisor.pool.started == []  # the second failure was not a restart of its own, racing the first


# -- canaries and warm-ups carry request ids -----------------------------------------------------------------


def test_a_canary_or_warm_up_id_is_safe_and_says_what_sent_it():
    for purpose, model in (("canary", "palindrome"), ("warmup", "interpolate"), ("canary", "a model/" + "x" * 200)):
        made = request_id(purpose, model)
        assert SAFE_REQUEST_ID.fullmatch(made) and made.startswith(f"{purpose}-")
    assert request_id("canary", "sample") != request_id("canary", "sample")  # random: one per request
    assert ops_api.REQUEST_ID_HEADER == REQUEST_ID_HEADER  # the runtime's copy of the product's header name


class FakeTorchServe(ThreadingHTTPServer):
    """POST /predictions/{model}: records the X-Request-Id of each, answers `status` (TorchServe's REST API)."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), FakeInference)
        self.status, self.ids = status, []


class FakeInference(BaseHTTPRequestHandler):
    server: FakeTorchServe

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.ids.append(self.headers.get("X-Request-Id"))
        body = json.dumps({"digit": 1} if self.server.status == 200 else {"code": 503, "message": "busy"}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def torchserve(request) -> Iterator[FakeTorchServe]:
    server = FakeTorchServe(getattr(request, "param", 200))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def grpc_torchserve() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """TorchServe's gRPC inference service, on raw bytes as the supervisor sends them: records (method,
    x-request-id) of each call; StreamPredictions answers, the unary Predictions is refused."""
    seen: list[tuple[str, str]] = []

    def stream(request: bytes, context):
        seen.append(("StreamPredictions", dict(context.invocation_metadata()).get("x-request-id")))
        yield b""

    def unary(request: bytes, context):
        seen.append(("Predictions", dict(context.invocation_metadata()).get("x-request-id")))
        context.abort(grpc.StatusCode.INTERNAL, "no")

    handlers = {
        "StreamPredictions": grpc.unary_stream_rpc_method_handler(stream),
        "Predictions": grpc.unary_unary_rpc_method_handler(unary),
    }
    generic = grpc.method_handlers_generic_handler(GRPC_SERVICE.lstrip("/"), handlers)
    with grpc_server(lambda server: server.add_generic_rpc_handlers((generic,))) as port:
        yield port, seen


def supervisor_of(tmp_path, inference: str, grpc_target: str = "127.0.0.1:1") -> Supervisor:
    api = TorchServeAPI(tmp_path, inference, "http://127.0.0.1:2", "http://127.0.0.1:3", grpc_target)
    supervisor = Supervisor(Settings(tmp_path, api, "http://127.0.0.1:5", key_lifetime_s=3600.0))
    supervisor.pool.shutdown()
    supervisor.pool = Recorder()
    return supervisor


def logged(caplog, model: str) -> list[dict]:
    """The supervisor's lines about `model`, as the JSON lines its log holds."""
    records = [r for r in caplog.records if r.name == "supervisor" and getattr(r, "model", None) == model]
    return [json.loads(JsonLines().format(r)) for r in records]


@pytest.mark.parametrize("torchserve", [503], indirect=True)
def test_a_canary_carries_its_id_and_every_line_about_it_names_it(tmp_path, torchserve, caplog, monkeypatch):
    """The id the check made is sent as X-Request-Id; a canary refused (or unanswered) is logged with it, and so is
    the restart of a model that left its canary unanswered."""
    caplog.set_level(logging.DEBUG, logger="supervisor")
    supervisor = supervisor_of(tmp_path, f"http://127.0.0.1:{torchserve.server_port}")
    model = ready_model(progress_at=0.0)
    action = judge(model, now=IDLE_PROBE_S, new_arrivals=False)
    supervisor.start(model, action)
    (name, args) = supervisor.pool.started[-1]
    assert name == "canary"
    supervisor.canary(*args)
    assert torchserve.ids == [action.request_id] and model.canary_sent is None
    (refused,) = logged(caplog, "palindrome")
    assert refused["request_id"] == action.request_id and "503" in refused["message"]

    caplog.clear()
    unreachable = supervisor_of(tmp_path, "http://127.0.0.1:1")  # nothing listens: no answer at all
    unreachable.canary(model, "canary-palindrome-0000000000000001")
    (silent,) = logged(caplog, "palindrome")
    assert silent["request_id"] == "canary-palindrome-0000000000000001" and "no answer" in silent["message"]

    caplog.clear()
    monkeypatch.setattr("ops.watch.scale", lambda _api, _name, _count: True)
    model.restarting = True
    supervisor.restart(model, "canary unanswered 6.0 s, workers idle", action.request_id)
    lines = logged(caplog, "palindrome")
    assert [line["message"].split()[0] for line in lines] == ["restarting", "restarted"]
    assert {line["request_id"] for line in lines} == {action.request_id}


def test_each_warm_up_call_carries_an_id_of_its_own_and_a_failed_one_is_logged_with_it(
    tmp_path, torchserve, grpc_torchserve, caplog
):
    """REST calls send X-Request-Id, gRPC calls x-request-id metadata, each a fresh `warmup-<model>-<hex>`; the one
    that failed (the unary gRPC call, refused here) is logged with its own id."""
    caplog.set_level(logging.INFO, logger="supervisor")
    port, seen = grpc_torchserve
    supervisor = supervisor_of(tmp_path, f"http://127.0.0.1:{torchserve.server_port}", f"127.0.0.1:{port}")
    model = ModelState("palindrome", statuses=["READY"], warming=True)
    supervisor.warm(model)
    assert not model.warmed and not model.warming  # one path failed: tried again later
    grpc_ids = dict(seen)
    ids = [*torchserve.ids, *grpc_ids.values()]
    assert len(torchserve.ids) == 1 and set(grpc_ids) == {"StreamPredictions", "Predictions"}
    assert len(set(ids)) == 3 and all(i.startswith("warmup-palindrome-") and SAFE_REQUEST_ID.fullmatch(i) for i in ids)
    (failed,) = logged(caplog, "palindrome")
    assert failed["request_id"] == grpc_ids["Predictions"] and "grpc-unary" in failed["message"]
