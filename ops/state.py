"""What the supervisor knows of each served model, and the watch's checks: what it decides from that.

A model the catalog describes (digitlab.catalog) gets canaries (its smallest valid request) and warm-ups,
and is ready once its workers are READY and it has answered; a model the catalog does not know is judged by
its workers' states alone. The checks are decisions only: they update a `ModelState` (under the watch's
lock) and say which `Action` to start; ops.watch starts it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from digitlab import catalog

IDLE_PROBE_S = 10.0  # a model that completed nothing for this long gets a canary (0.1 req/s when idle)
CANARY_GAP_S = 1.0  # new arrivals trigger a canary at most this often
# A canary unanswered this long, with no sign of work meanwhile: the model is stalled.
STALL_AFTER_S = 6.0
GONE_GRACE_S = 12.0  # TorchServe replaces a killed worker in ~7 s; one it has not replaced by then it never will
# A model that was READY and now has a worker that is not, whose processes used no CPU for this long (a
# worker loading its model burns CPU; one whose frontend never connects sits idle in accept()): restart it.
# New workers that sit idle this long without becoming READY after a restart are restarted again.
UNREADY_GRACE_S = 8.0
WARM_RETRY_S = 2.0  # a warm-up that failed (TorchServe still settling) is tried again after this


def request_id(purpose: str, model: str) -> str:
    """The id a canary or warm-up is sent under: `<purpose>-<model>-<16 random hex digits>`
    ("canary-palindrome-9f2c41d0a7b84e6f"), a safe X-Request-Id (1-128 characters of A-Z a-z 0-9 . _ -,
    digitlab.errors.SAFE_REQUEST_ID) that says who sent it and why: the workers' lines about it and the
    supervisor's (a failed canary, the restart of a model that left it unanswered) name the same id."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", model)[:96]
    return f"{purpose}-{name}-{secrets.token_hex(8)}"


def canary(model: str) -> dict | None:
    """The model's smallest valid request (what a canary sends); None for a model the catalog does not know."""
    served = catalog.BY_NAME.get(model)
    return served.canary if served else None


def warm_ups(model: str) -> list[tuple[str, dict]]:
    """The calls that warm `model`: REST, gRPC StreamPredictions and unary Predictions, streamed where it streams.

    Warm before ready: every path a client can take to a model answers once before /ready says ready, so the
    first user after a start or a scale-up does not pay for the JVM's and the worker's first-call costs (the
    first gRPC stream's first frame took ~20x the warm one). "stream" bodies only where the model takes them,
    and never over unary gRPC, where a stream stalls the worker.
    """
    body = catalog.model(model).canary
    calls = [("rest", body), ("grpc-stream", body), ("grpc-unary", body)]
    if model in catalog.STREAMING:
        streamed = {**body, "stream": True}
        calls += [("rest", streamed), ("grpc-stream", streamed)]
    return calls


@dataclass
class ModelState:
    name: str
    workers: int = 1  # how many the model is configured to run (minWorkers at start-up)
    statuses: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    progress: float = -1.0  # the PROGRESS_METRICS' sum when last seen
    progress_at: float = 0.0  # monotonic time it last grew
    cpu: float = -1.0  # CPU seconds its workers have used
    cpu_at: float = 0.0  # monotonic time that last grew
    arrivals: float = 0.0  # ARRIVAL_METRIC when last seen
    canary_sent: float | None = None  # monotonic time of the canary in flight, if any
    canary_id: str | None = None  # the request id of the last canary sent (the one in flight while canary_sent)
    canary_at: float = 0.0  # monotonic time of the last canary sent
    gone_since: float | None = None  # when a listed worker process was first found gone
    unready_since: float | None = None  # when a worker of a model that was READY was first seen not READY
    was_ready: bool = False  # all its workers were READY once (before that it is still loading)
    canaries: int = 0  # canaries sent: TorchServe counts them as arrivals, which must not trigger more canaries
    answered: bool = False  # has completed a request since (re)start
    warmed: bool = False  # every path of `warm_ups` has answered since (re)start
    warming: bool = False  # a warm-up is under way
    warm_at: float = 0.0  # monotonic time of the last warm-up attempt
    restarting: bool = False
    # A worker thread failed again while the model was being restarted (TorchServe handed the new worker the
    # job that stalled the old one): the restart must be done again once it is over.
    failed_during_restart: bool = False
    restarts: int = 0

    @property
    def probed(self) -> bool:
        """Does it get canaries and warm-ups (the catalog knows it)?"""
        return self.name in catalog.BY_NAME

    def workers_ready(self) -> bool:
        return len(self.statuses) >= self.workers and all(s == "READY" for s in self.statuses)

    def ready(self) -> bool:
        if not self.probed:
            return self.workers_ready() and not self.restarting
        return self.workers_ready() and not self.restarting and self.answered and self.warmed

    def restarted(self, progress_at: float) -> None:
        """Forget what was seen before a restart; `progress_at` in the past makes a canary due at once."""
        self.restarting, self.answered, self.canary_sent = False, False, None
        self.warmed, self.warming = False, False
        self.unready_since, self.gone_since = None, None
        self.progress_at = progress_at
        self.progress, self.restarts = -1.0, self.restarts + 1


@dataclass(frozen=True)
class Action:
    """What a check asks the watch to start for a model: "warm", "canary" or "restart" (and why); `request_id`:
    the canary's id, to send it under, or the id of the canary whose silence calls for the restart."""

    kind: str
    why: str = ""
    request_id: str | None = field(default=None, compare=False)  # random: not part of what is asked


# -- what TorchServe says, noted ---------------------------------------------------------------------------


def note_progress(model: ModelState, progress: float, now: float) -> None:
    """`progress`: the model's PROGRESS_METRICS summed (work taken or done)."""
    if progress != model.progress:
        model.answered = model.answered or model.progress >= 0 or progress > 0
        model.progress, model.progress_at = progress, now


def note_workers(model: ModelState, cpu: float | None, now: float) -> bool:
    """`cpu`: the CPU seconds its workers have used, None when one is gone. -> whether a listed worker is gone
    (TorchServe usually starts another within seconds: its PIDs are worth reading again)."""
    if cpu is None and model.statuses:
        model.gone_since = model.gone_since or now
        return True
    if cpu is not None:
        model.gone_since = None
        if cpu != model.cpu:
            model.cpu, model.cpu_at = cpu, now
    return False


def note_arrivals(model: ModelState, arrived: float) -> bool:
    """`arrived`: the model's ARRIVAL_METRIC. -> whether requests arrived that are not our own canaries."""
    others = arrived - model.canaries
    new_arrivals = others > model.arrivals
    model.arrivals = max(model.arrivals, others)  # a canary sent but not yet counted dips it
    return new_arrivals


# -- the checks ------------------------------------------------------------------------------------------------


def judge(model: ModelState, now: float, new_arrivals: bool) -> Action | None:
    if model.restarting or not model.probed:
        return None
    if not model.workers_ready():
        return judge_unready(model, now)
    model.was_ready, model.unready_since = True, None
    if not model.warmed:
        return warm_when_due(model, now)
    if model.canary_sent is not None:
        return detect_stall(model, now)
    return canary_when_due(model, now, new_arrivals)


def judge_unready(model: ModelState, now: float) -> Action | None:
    """A model whose workers were READY and now are not: TorchServe is replacing a dead worker (it
    usually manages within seconds), or it cannot. It cannot when the new worker's process waits in
    accept() for a frontend connection that never comes: TorchServe's backend channels share a few
    netty threads, and a unary gRPC call that streamed blocks one of them for minutes (a reply it
    cannot deliver is offered to a full queue, `responseTimeout` s per frame), so a channel registered
    on that thread never connects. Scaling to 0 and back registers a channel on another thread."""
    if not model.was_ready:
        return None  # still loading at start-up: not judged
    if model.unready_since is None:
        model.unready_since = now
    quiet = now - max(model.unready_since, model.cpu_at)
    if quiet < UNREADY_GRACE_S:
        return None
    model.restarting = True
    return Action("restart", f"workers not READY and idle for {quiet:.1f} s")


def warm_when_due(model: ModelState, now: float) -> Action | None:
    if model.warming or now - model.warm_at < WARM_RETRY_S:
        return None
    model.warming, model.warm_at = True, now
    model.canaries += len(warm_ups(model.name))  # arrivals of our own, like canaries
    return Action("warm")


def detect_stall(model: ModelState, now: float) -> Action | None:
    """A canary in flight: the model is stalled when nothing moved since it was sent."""
    quiet = now - max(model.canary_sent, model.progress_at, model.cpu_at)
    # A worker that died is normally replaced by TorchServe itself: give it time first.
    limit = STALL_AFTER_S if model.gone_since is None else GONE_GRACE_S
    if quiet < limit:
        return None
    model.restarting = True
    why = "a worker died and was not replaced" if model.gone_since else "workers idle"
    return Action("restart", f"canary unanswered {quiet:.1f} s, {why}", model.canary_id)


def canary_when_due(model: ModelState, now: float, new_arrivals: bool) -> Action | None:
    """A canary when the model has been idle for IDLE_PROBE_S, or new requests came (at most one per
    CANARY_GAP_S)."""
    if now - model.progress_at >= IDLE_PROBE_S or (new_arrivals and now - model.canary_at >= CANARY_GAP_S):
        model.canary_sent = model.canary_at = now
        model.canary_id = request_id("canary", model.name)
        model.canaries += 1
        return Action("canary", request_id=model.canary_id)
    return None
