"""The supervisor's watch over a running TorchServe: readiness, canaries, restarts of stalled models, keys.

Every POLL_S, `Supervisor.poll` reads TorchServe's worker states (every DESCRIBE_EVERY_S once ready) and
its metrics, notes each model's progress, worker CPU and arrivals, and judges it with the checks of
ops.state (`judge`): a model whose workers stopped being READY while idle is restarted; one not yet warmed
is warmed; one whose canary went unanswered while its workers neither completed a request nor used CPU is
restarted; an idle one, or one new requests just arrived for, gets a canary. Then the keys: renewed before
they expire, and the doors reloaded after TorchServe was started again with new ones. Warm-ups, canaries
and restarts run in a thread pool; the state they share is each model's `ModelState`, under one lock.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ops import renewal
from ops.api import Counts, TorchServeAPI
from ops.instance import DEFAULT_READY_ADDRESS
from ops.metrics import Counter, Gauge, Histogram, Registry
from ops.state import (
    IDLE_PROBE_S,
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
from ops.workers import scale, worker_cpu, worker_pids

log = logging.getLogger("supervisor")

POLL_S = 1.0  # how often the watch loop reads TorchServe's metrics (completions per model)
DESCRIBE_EVERY_S = 5.0  # how often it reads worker states once ready (each read is an access-log line)
RESTART_ATTEMPTS = 3  # scale 0 -> n this often before giving up (each attempt gets a fresh backend channel)
LOG_CHECK_S = 10.0  # how often the registered doors' log sizes are checked (a stat each)
# Graceful stop (SIGTERM): /ready turns 503 at once, so that load balancers and doors stop sending; the
# supervisor then waits until TorchServe has taken no new request and finished none for DRAIN_QUIET_S (what
# was in flight is answered), at most DRAIN_TIMEOUT_S, before stopping it. Orchestrators' grace periods
# (Kubernetes terminationGracePeriodSeconds, compose stop_grace_period) are set above DRAIN_TIMEOUT_S + STOP_GRACE_S.
DRAIN_QUIET_S = 2.0
DRAIN_TIMEOUT_S = 25.0


@dataclass(frozen=True)
class Settings:
    """What the supervisor needs of its instance, read once from the config it runs TorchServe with."""

    workdir: Path
    api: TorchServeAPI
    ready_address: str  # where /ready, /live and /events are served
    key_lifetime_s: float  # TorchServe's token_expiration_min, in seconds

    @classmethod
    def from_properties(cls, workdir: Path, props: dict[str, str]) -> Settings:
        return cls(
            workdir=workdir,
            api=TorchServeAPI.from_properties(workdir, props),
            ready_address=props.get("ready_address", DEFAULT_READY_ADDRESS),
            key_lifetime_s=float(props.get("token_expiration_min", 60)) * 60,
        )


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings, self.api = settings, settings.api
        self.models: dict[str, ModelState] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="supervisor")
        self.events: list[dict] = []  # restarts and renewals, newest last (read by tests and operators)
        self.described_at = 0.0
        self.torchserve: subprocess.Popen | None = None  # the running TorchServe, once started
        self.gave_up = False  # TorchServe ended unasked too often: the supervisor is exiting
        self.draining = False  # asked to stop: not ready, no canaries, in-flight requests finishing
        self.keys_at_start: str | None = None  # its inference key before a restart: doors follow the new one
        self.metrics = Registry()  # served at /metrics beside /ready (ops.readiness)
        self.metrics.add(
            Gauge("digitlab_ready", "1 when every model is ready (what /ready says), else 0", self.ready_gauge)
        )
        self.restarts = self.metrics.add(
            Counter("digitlab_torchserve_restarts_total", "TorchServe ended without being asked and was started again")
        )
        self.repaired = self.metrics.add(
            Counter("digitlab_stalled_workers_repaired_total", "a model's workers restarted (stalled, dead or failed)")
        )
        self.canary_latency = self.metrics.add(
            Histogram("digitlab_canary_latency_seconds", "time to the answer of a canary or warm-up, per model")
        )

    # TorchServe itself (ops.launcher tells) -----------------------------------------------------------
    def frontend_alive(self) -> bool:
        return self.torchserve is not None and self.torchserve.poll() is None

    def torchserve_started(self, torchserve: subprocess.Popen) -> None:
        """A new TorchServe: forget what was known of the last one's models (readiness starts over)."""
        with self.lock:
            self.models, self.described_at = {}, 0.0
            self.torchserve = torchserve

    def torchserve_ended(self, code: int | None, restarting: bool) -> None:
        """TorchServe ended without being asked: an event, and doors to reload once the next one has new keys."""
        self.gave_up = not restarting
        if restarting:
            self.restarts.inc()
        self.keys_at_start = self.api.key("inference")
        self.events.append({"event": "torchserve exited", "code": code, "restarting": restarting, "at": time.time()})

    def ready(self) -> tuple[bool, dict[str, str]]:
        """(ready, per model): ready when TorchServe runs and every model is. Its frontend gone, or a stop
        asked for (draining), not ready at once."""
        if self.draining or not self.frontend_alive():
            with self.lock:
                return False, {name: "not ready" for name in self.models}
        with self.lock:
            detail = {
                m.name: ("restarting" if m.restarting else "ready" if m.ready() else "not ready")
                for m in self.models.values()
            }
        return bool(detail) and all(v == "ready" for v in detail.values()), detail

    def ready_gauge(self) -> dict:
        return {(): 1.0 if self.ready()[0] else 0.0}

    # the watch loop ------------------------------------------------------------------------------------
    def watch(self, stop: threading.Event) -> None:
        last_cap = time.monotonic()
        while not stop.wait(POLL_S):
            try:
                self.poll()
            except (OSError, ValueError, KeyError):  # TorchServe starting or going away: look again later
                log.debug("poll failed", exc_info=True)
            if time.monotonic() - last_cap >= LOG_CHECK_S:
                last_cap = time.monotonic()
                renewal.cap_door_logs(self.settings.workdir)

    def poll(self) -> None:
        """One pass: what TorchServe says of every model, each model judged, then the keys."""
        if self.draining:  # stopping: no canary or warm-up may count as traffic still in flight
            return
        now = time.monotonic()
        self.describe_when_due(now)
        text = self.api.metrics_text()
        if text is None:
            return
        counts = Counts.parse(text)
        with self.lock:
            for model in self.models.values():
                note_progress(model, counts.progress.get(model.name, 0.0), now)
                if note_workers(model, worker_cpu(model.pids), now):
                    self.described_at = 0.0  # a worker is gone: read the new PIDs at the next pass
                new_arrivals = note_arrivals(model, counts.arrivals.get(model.name, 0.0))
                if action := judge(model, now, new_arrivals):
                    self.start(model, action)
        self.renew_keys()
        self.follow_new_keys()

    # what TorchServe says ---------------------------------------------------------------------------------
    def describe_when_due(self, now: float) -> None:
        """Worker states and processes: every pass until ready, then every DESCRIBE_EVERY_S."""
        if not self.ready()[0] or now - self.described_at >= DESCRIBE_EVERY_S:
            self.refresh_models()
            self.described_at = now

    def refresh_models(self) -> None:
        names = self.api.model_names()
        for name in names or []:
            described = self.api.describe(name)
            if described is None:
                continue
            with self.lock:
                if name not in self.models:  # its counter from 0, so that the first repair is an increase
                    self.repaired.inc({"model": name}, by=0)
                model = self.models.setdefault(
                    name, ModelState(name, max(1, described["minWorkers"]), progress_at=time.monotonic())
                )
                model.statuses = [w["status"] for w in described["workers"]]
                model.pids = worker_pids(self.settings.workdir, described["workers"])

    def start(self, model: ModelState, action: Action) -> None:
        """Start what a check asked for, in the pool (the watch loop never waits on TorchServe's answers)."""
        if action.kind == "restart":
            self.pool.submit(self.restart, model, action.why, action.request_id)
        elif action.kind == "warm":
            self.pool.submit(self.warm, model)
        else:
            self.pool.submit(self.canary, model, action.request_id)

    # the keys -------------------------------------------------------------------------------------------------
    def renew_keys(self, force: bool = False) -> list[str]:
        return renewal.renew_keys(self.api, self.settings.key_lifetime_s, force, self.events)

    def follow_new_keys(self) -> None:
        """After TorchServe was started again it has new keys: reload the doors once they are written."""
        if self.keys_at_start is None:
            return
        key = self.api.key("inference")
        if key is not None and key != self.keys_at_start:
            self.keys_at_start = None
            renewal.reload_doors(self.settings.workdir)

    def worker_thread_failed(self, name: str) -> None:
        """TorchServe's console said the model's worker thread failed (ops.launcher): restart it now."""
        with self.lock:
            model = self.models.get(name)
            if model is None:
                return
            if model.restarting:  # the new worker failed too: the restart under way goes round again
                model.failed_during_restart = True
                return
            model.restarting = True
        self.pool.submit(self.restart, model, "its worker thread failed (a reply it could not deliver)")

    # what the checks start, in the pool --------------------------------------------------------------------
    def warm(self, model: ModelState) -> None:
        """Send `warm_ups(model)`, each path once and under an id of its own (`warmup-<model>-<hex>`); the model
        is warmed when every one answered 200. Each call that did not is logged with its id."""
        began = time.monotonic()
        calls = [(transport, body, request_id("warmup", model.name)) for transport, body in warm_ups(model.name)]
        failed = self.api.warm_up(model.name, calls)
        if not failed:
            self.canary_latency.observe(time.monotonic() - began, {"model": model.name})
        with self.lock:
            model.warming, model.warmed = False, not failed
        for transport, call_id in failed:
            extra = {"model": model.name, "request_id": call_id}
            log.warning("warm-up of %s: no answer over %s yet; trying again", model.name, transport, extra=extra)

    def canary(self, model: ModelState, canary_id: str | None = None) -> None:
        """Send the model's canary under `canary_id` (`canary-<model>-<hex>`, made by the check that asked for it);
        one that got no answer, or an answer other than 200, is logged with its id."""
        canary_id = canary_id or request_id("canary", model.name)
        extra = {"model": model.name, "request_id": canary_id}
        began = time.monotonic()
        try:
            status = self.api.predict(model.name, canary(model.name), canary_id)
        except OSError as err:  # timed out or refused: the watch loop judges by progress, not by this call
            log.warning("canary of %s: no answer (%s)", model.name, err, extra=extra)
        else:
            self.canary_latency.observe(time.monotonic() - began, {"model": model.name})
            if status != 200:
                log.warning("canary of %s: answered %d", model.name, status, extra=extra)
        finally:
            with self.lock:
                model.canary_sent = None

    def restart(self, model: ModelState, why: str, canary_id: str | None = None) -> None:
        """Scale the model's workers to 0 and back: the only way out of a stalled TorchServe worker.
        `canary_id`: the canary left unanswered, if that is why, which the restart's log lines name.

        Again, up to RESTART_ATTEMPTS times, when the new workers sit idle without becoming READY (their
        backend channel landed on a blocked netty thread, see `judge_unready`)."""
        began = time.monotonic()
        extra = {"model": model.name} | ({"request_id": canary_id} if canary_id else {})
        log.warning("restarting %s: %s", model.name, why, extra=extra)
        attempts = 0
        try:
            while attempts < RESTART_ATTEMPTS:
                attempts += 1
                with self.lock:
                    model.failed_during_restart = False
                scale(self.api, model.name, 0)
                if scale(self.api, model.name, model.workers) and not model.failed_during_restart:
                    break
                log.warning(
                    "%s: %s, restarting again",
                    model.name,
                    "a new worker's thread failed too"
                    if model.failed_during_restart
                    else "new workers idle and not READY",
                    extra=extra,
                )
        finally:
            with self.lock:
                model.restarted(progress_at=time.monotonic() - IDLE_PROBE_S)  # a canary at once tells readiness
            event = {
                "event": "restart",
                "model": model.name,
                "why": why,
                "attempts": attempts,
                "seconds": round(time.monotonic() - began, 2),
                "at": time.time(),
            }
            self.events.append(event)
            self.repaired.inc({"model": model.name})
            log.warning("restarted %s in %.1f s", model.name, event["seconds"], extra=extra)

    # stopping --------------------------------------------------------------------------------------------
    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> float:
        """Not ready from now on; wait until TorchServe's request counters stand still for DRAIN_QUIET_S (no
        arrival, no completion: nothing left in flight), at most `timeout` s. -> seconds waited."""
        self.draining = True
        began = time.monotonic()
        self.api.wait_quiet(DRAIN_QUIET_S, timeout)
        waited = time.monotonic() - began
        self.events.append({"event": "drained", "seconds": round(waited, 2), "at": time.time()})
        log.info("drained in %.1f s", waited)
        return waited
