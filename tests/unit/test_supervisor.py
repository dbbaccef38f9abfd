"""The supervisor's watch without a TorchServe: how each model is probed, and what each check decides."""

from __future__ import annotations

import json

from clients.ts_grpc import inference_pb2
from ops.api import Counts, TorchServeAPI, predictions_request
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
    warm_ups,
)
from ops.watch import Settings, Supervisor

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
    assert judge(idle, now=100.0 + IDLE_PROBE_S, new_arrivals=False) == Action("canary")
    assert idle.canary_sent == 100.0 + IDLE_PROBE_S and idle.canaries == 1
    busy = ready_model(progress_at=100.0)
    assert judge(busy, now=101.0, new_arrivals=False) is None  # busy and nothing new: no canary
    assert judge(busy, now=101.0, new_arrivals=True) == Action("canary")
    busy.canary_sent = None  # answered
    assert judge(busy, now=101.0 + CANARY_GAP_S / 2, new_arrivals=True) is None  # at most one per CANARY_GAP_S


def test_an_unanswered_canary_with_nothing_moving_restarts_the_model():
    model = ready_model(canary_sent=100.0, progress_at=90.0, cpu_at=90.0)
    assert judge(model, now=100.0 + STALL_AFTER_S - 0.1, new_arrivals=False) is None
    action = judge(model, now=100.0 + STALL_AFTER_S, new_arrivals=False)
    assert action.kind == "restart" and action.why.endswith("workers idle") and model.restarting
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
    for action in (Action("warm"), Action("canary"), Action("restart", "why")):
        supervisor.start(model, action)
    assert supervisor.pool.started == [("warm", (model,)), ("canary", (model,)), ("restart", (model, "why"))]
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
