"""Run TorchServe and keep it honest: a real readiness signal, stalled-worker recovery, key renewal.

    python -m ops.supervisor --workdir .ts --config config.properties --model-store model_store

`python -m ops.server start` runs this in the background; a container runs it as its entry point. It
1. writes the instance's TorchServe config into the workdir (the hardening that needs absolute paths:
   see `instance_properties`) and starts TorchServe as its child, in a process group of its own;
2. serves, without a key, on `ready_address`: GET /ready -> 200 when every worker of every model is READY
   and each model answers, else 503 (at once when TorchServe's frontend is gone); GET /live -> 200 while
   TorchServe runs or is being started again; GET /events -> what it did. TorchServe's own /ping says
   Healthy before any worker has loaded and while a stalled worker is still listed as READY;
3. watches every model with canaries (its smallest valid request), sent when the model has been idle for
   IDLE_PROBE_S or as soon as new requests arrive for it (at most one per CANARY_GAP_S). A canary left
   unanswered for STALL_AFTER_S, while the model's workers neither completed a request nor used any
   CPU, means a stalled model -- a unary gRPC call that streamed, a dead worker TorchServe still lists as
   READY -- and its workers are scaled to 0 and back. A model busy with real traffic burns CPU, so it is
   never taken for stalled however long its queue (TorchServe's latency metrics count REST only).
   Faster signals restart a model without waiting for a canary: TorchServe's console reporting that a
   model's worker thread failed (`relay_console`), and workers that stay not READY while idle
   (`judge_unready`); a restart whose new workers sit idle is tried again;
4. treats any end of TorchServe it did not ask for (a killed JVM exits the launcher with 0) as a failure:
   the event is recorded and TorchServe started again in place, a few times, then it exits 1 so that the
   orchestrator restarts it (compose's restart: on-failure, Kubernetes);
5. renews TorchServe's inference and management keys before they expire (TorchServe never does; its
   clients re-read the key file and retry once, see clients/base.py), and then reloads every door that
   registered with this instance by running the command it registered (ops/instance.py, `register_door`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from digitlab.keyfiles import read_key_file

try:  # the gRPC warm-up's transport; without it (a bare runtime) only REST is warmed
    import grpc
except ImportError:  # pragma: no cover - the checkout's venv and the image both have it
    grpc = None
from ops.instance import (
    DEFAULT_CONFIG,
    DEFAULT_WORKDIR,
    EVENTS_PATH,
    INSTANCE_CONFIG,
    LIVE_PATH,
    MODEL_STORE,
    READY_PATH,
    ROOT,
    TORCHSERVE_PID_FILE,
    cap_logs,
    forget_doors,
    group_alive,
    instance_properties,
    key_file,
    read_properties,
    registered_doors,
    write_properties,
)

log = logging.getLogger("supervisor")

POLL_S = 1.0  # how often the watch loop reads TorchServe's metrics (completions per model)
DESCRIBE_EVERY_S = 5.0  # how often it reads worker states once ready (each read is an access-log line)
IDLE_PROBE_S = 10.0  # a model that completed nothing for this long gets a canary (0.1 req/s when idle)
CANARY_GAP_S = 1.0  # new arrivals trigger a canary at most this often
# A canary unanswered this long, with no sign of work meanwhile: the model is stalled.
STALL_AFTER_S = 6.0
GONE_GRACE_S = 12.0  # TorchServe replaces a killed worker in ~7 s; one it has not replaced by then it never will
# A model that was READY and now has a worker that is not, whose processes used no CPU for this long (a
# worker loading its model burns CPU; one whose frontend never connects sits idle in accept()): restart it.
UNREADY_GRACE_S = 8.0
RESTART_ATTEMPTS = 3  # scale 0 -> n this often before giving up (each attempt gets a fresh backend channel)
CANARY_TIMEOUT_S = 60.0  # a canary that is stuck is abandoned after this (the restart answers it first)
SCALE_TIMEOUT_S = 120.0  # longest wait for workers to leave or come back when restarting a model
RENEW_AT_FRACTION = 0.25  # renew a key when less than this share of its lifetime is left
HTTP_TIMEOUT_S = 5.0
STOP_GRACE_S = 10.0  # TorchServe's own shutdown (workers finish their batch) before SIGKILL
# TorchServe ending without being asked (its JVM killed by the OOM killer, a crash) is restarted in place, at
# most this often within RESTART_WINDOW_S; beyond that the supervisor exits non-zero for its orchestrator.
MAX_TORCHSERVE_RESTARTS = 3
RESTART_WINDOW_S = 300.0
# Graceful stop (SIGTERM): /ready turns 503 at once, so that load balancers and doors stop sending; the
# supervisor then waits until TorchServe has taken no new request and finished none for DRAIN_QUIET_S (what
# was in flight is answered), at most DRAIN_TIMEOUT_S, before stopping it. Orchestrators' grace periods
# (Kubernetes terminationGracePeriodSeconds, compose stop_grace_period) are set above DRAIN_TIMEOUT_S + STOP_GRACE_S.
DRAIN_QUIET_S = 2.0
DRAIN_TIMEOUT_S = 25.0
LOG_CHECK_S = 10.0  # how often the registered doors' log sizes are checked (a stat each)
DOOR_RELOAD_TIMEOUT_S = 30.0  # a door's reload command waits for its old nginx workers (at most 10 s)
LOG4J_CONFIG = ROOT / "log4j2.xml"

# Each served model's smallest valid request: what a canary sends. A model not listed is judged by
# its workers' states alone.
CANARIES = {
    "palindrome": {"digits": [1, 2, 2]},
    "palindrome_rnn": {"digits": [1, 2, 2]},
    "sample": {"n": 1, "seed": 0},
    "interpolate": {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 2},
}
# Warm before ready: every path a client can take to a model answers once before /ready says ready, so the
# first user after a start or a scale-up does not pay for the JVM's and the worker's first-call costs (the
# first gRPC stream's first frame took ~20x the warm one). (transport, body) per call; "stream" bodies only
# where the model takes them, and never over unary gRPC, where a stream stalls the worker.
STREAMING_MODELS = {"interpolate"}
WARM_RETRY_S = 2.0  # a warm-up that failed (TorchServe still settling) is tried again after this
GRPC_SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService"


def warm_ups(model: str) -> list[tuple[str, dict]]:
    """The calls that warm `model`: REST, gRPC StreamPredictions and unary Predictions, streamed where it streams."""
    body = CANARIES[model]
    calls = [("rest", body), ("grpc-stream", body), ("grpc-unary", body)]
    if model in STREAMING_MODELS:
        streamed = {**body, "stream": True}
        calls += [("rest", streamed), ("grpc-stream", streamed)]
    return calls


def predictions_request(model: str, body: bytes) -> bytes:
    """TorchServe's PredictionsRequest {model_name = 1, input = 3: {"data": body}} in protobuf's wire format,
    written by hand so that the runtime needs neither the generated stubs nor the clients that hold them."""
    entry = _length_delimited(1, b"data") + _length_delimited(2, body)  # a map entry: key = 1, value = 2
    return _length_delimited(1, model.encode()) + _length_delimited(3, entry)


def _length_delimited(field_number: int, data: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


# Sums that grow when a model's worker takes a job from its queue, and when it completes one. Refused
# requests (4xx) count in the first only: a worker that refuses everything is still alive.
PROGRESS_METRICS = ("ts_queue_latency_microseconds", "ts_inference_latency_microseconds")
ARRIVAL_METRIC = "ts_inference_requests_total"  # grows when a request for a model arrives
# TorchServe's console line (log4j2.xml's pattern: date [LEVEL] thread logger - message) when a worker thread
# left its loop on a reply it could not deliver -- a unary gRPC call that streamed. That model answers
# nothing more until its workers are restarted, so this restarts it at once instead of waiting for a canary.
WORKER_THREAD_FAILED = re.compile(
    rb"\[ERROR\] W-\d+-(?P<model>[A-Za-z0-9_]+)_[^ _]+ org\.pytorch\.serve\.wlm\.WorkerThread - IllegalStateException"
)


# -- TorchServe's HTTP APIs ----------------------------------------------------------------------------


def http(
    method: str, url: str, token: str | None = None, body: bytes | None = None, timeout: float = HTTP_TIMEOUT_S
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def key_entries(workdir: Path) -> dict[str, dict]:
    """TorchServe's key_file.json: {"management": {"key", "expiration time"}, "inference": ..., "API": ...}.

    Empty when token authorization is off (no key file).
    """
    try:
        return read_key_file(key_file(workdir))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def counter(metrics_text: str, metric: str) -> dict[str, float]:
    """Prometheus text -> {model: value of `metric`}, a counter per model that only grows."""
    pattern = re.compile(rf'^{metric}{{model_name="([^"]+)"[^}}]*}} ([0-9.eE+-]+)$', re.M)
    return {m: float(v) for m, v in pattern.findall(metrics_text)}


def worker_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user + system) the worker processes have used; None if one is gone or /proc is absent."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15
    return total if pids else None


def worker_processes(sockets: set[str]) -> list[int]:
    """PIDs of the Python workers listening on these socket paths, found in /proc by their command line.

    TorchServe's management API lists a worker's PID only once the frontend has read it from the worker's
    output, and keeps listing a dead one; a worker it is starting again under the same id (so the same
    socket) is visible here from its first instruction. Empty without /proc (macOS)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if (
            b"--sock-name" in args
            and (i := args.index(b"--sock-name") + 1) < len(args)
            and args[i].decode(errors="replace") in sockets
        ):
            found.append(int(entry.name))
    return found


def expires_at(entry: dict) -> float | None:
    """A key's expiry as Unix seconds (TorchServe writes ISO-8601 with a Z), None when it has none."""
    text = entry.get("expiration time")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


# -- the watch ----------------------------------------------------------------------------------------


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
    restarts: int = 0

    def workers_ready(self) -> bool:
        return len(self.statuses) >= self.workers and all(s == "READY" for s in self.statuses)

    def ready(self) -> bool:
        if self.name not in CANARIES:
            return self.workers_ready() and not self.restarting
        return self.workers_ready() and not self.restarting and self.answered and self.warmed


class Supervisor:
    def __init__(self, workdir: Path, props: dict[str, str]) -> None:
        self.workdir, self.props = workdir, props
        self.management = props["management_address"]
        self.inference = props["inference_address"]
        self.metrics = props["metrics_address"]
        self.lifetime_s = float(props.get("token_expiration_min", 60)) * 60
        self.models: dict[str, ModelState] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="supervisor")
        self.events: list[dict] = []  # restarts and renewals, newest last (read by tests and operators)
        self.described_at = 0.0
        self.torchserve: subprocess.Popen | None = None  # the running TorchServe, once started
        self.gave_up = False  # TorchServe ended unasked too often: the supervisor is exiting
        self.draining = False  # asked to stop: not ready, no canaries, in-flight requests finishing
        self.keys_at_start: str | None = None  # its inference key before a restart: doors follow the new one

    # TorchServe itself ---------------------------------------------------------------------------
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
        self.keys_at_start = self.key("inference")
        event = {"event": "torchserve exited", "code": code, "restarting": restarting, "at": time.time()}
        self.events.append(event)
        log.error(
            "TorchServe exited with %s without being asked: %s",
            code,
            "starting it again"
            if restarting
            else f"{MAX_TORCHSERVE_RESTARTS} restarts in {RESTART_WINDOW_S:.0f} s, giving up",
        )

    def key(self, kind: str) -> str | None:
        return key_entries(self.workdir).get(kind, {}).get("key")

    # readiness --------------------------------------------------------------------------------
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

    # one pass of the watch loop -------------------------------------------------------------------
    def poll(self) -> None:
        if self.draining:  # stopping: no canary or warm-up may count as traffic still in flight
            return
        now = time.monotonic()
        if not self.ready()[0] or now - self.described_at >= DESCRIBE_EVERY_S:
            self.refresh_models()
            self.described_at = now
        status, text = http("GET", f"{self.metrics}/metrics")
        if status != 200:
            return
        sums = [counter(text.decode(), metric) for metric in PROGRESS_METRICS]
        done = {m: sum(s.get(m, 0.0) for s in sums) for m in self.models}
        arrived = counter(text.decode(), ARRIVAL_METRIC)
        with self.lock:
            for model in self.models.values():
                value = done.get(model.name, 0.0)
                if value != model.progress:
                    model.answered = model.answered or model.progress >= 0 or value > 0
                    model.progress, model.progress_at = value, now
                cpu = worker_cpu(model.pids)
                if cpu is None and model.statuses:  # a worker died: TorchServe usually starts another within seconds
                    model.gone_since = model.gone_since or now
                    self.described_at = 0.0  # read the new PIDs at the next pass
                elif cpu is not None:
                    model.gone_since = None
                    if cpu != model.cpu:
                        model.cpu, model.cpu_at = cpu, now
                others = arrived.get(model.name, 0.0) - model.canaries  # arrivals that are not our canaries
                new_arrivals = others > model.arrivals
                model.arrivals = max(model.arrivals, others)  # a canary sent but not yet counted dips it
                if model.restarting or model.name not in CANARIES:
                    continue
                if not model.workers_ready():
                    self.judge_unready(model, now)
                    continue
                model.was_ready, model.unready_since = True, None
                if not model.warmed:
                    if not model.warming and now - model.warm_at >= WARM_RETRY_S:
                        model.warming, model.warm_at = True, now
                        model.canaries += len(warm_ups(model.name))  # arrivals of our own, like canaries
                        self.pool.submit(self.warm, model)
                    continue
                if model.canary_sent is not None:
                    quiet = now - max(model.canary_sent, model.progress_at, model.cpu_at)
                    # A worker that died is normally replaced by TorchServe itself: give it time first.
                    limit = STALL_AFTER_S if model.gone_since is None else GONE_GRACE_S
                    if quiet >= limit:
                        model.restarting = True
                        why = "a worker died and was not replaced" if model.gone_since else "workers idle"
                        self.pool.submit(self.restart, model, f"canary unanswered {quiet:.1f} s, {why}")
                elif now - model.progress_at >= IDLE_PROBE_S or (
                    new_arrivals and now - model.canary_at >= CANARY_GAP_S
                ):
                    model.canary_sent = model.canary_at = now
                    model.canaries += 1
                    self.pool.submit(self.canary, model)
        self.renew_keys()
        self.follow_new_keys()

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> float:
        """Not ready from now on; wait until TorchServe's request counters stand still for DRAIN_QUIET_S (no
        arrival, no completion: nothing left in flight), at most `timeout` s. -> seconds waited."""
        self.draining = True
        began = last_change = time.monotonic()
        last = None
        while time.monotonic() - began < timeout:
            try:
                status, text = http("GET", f"{self.metrics}/metrics")
            except OSError:
                break  # TorchServe is gone: nothing to wait for
            if status != 200:
                break
            counts = tuple(sum(counter(text.decode(), m).values()) for m in (ARRIVAL_METRIC, *PROGRESS_METRICS))
            if counts != last:
                last, last_change = counts, time.monotonic()
            elif time.monotonic() - last_change >= DRAIN_QUIET_S:
                break
            time.sleep(0.2)
        waited = time.monotonic() - began
        self.events.append({"event": "drained", "seconds": round(waited, 2), "at": time.time()})
        log.info("drained in %.1f s", waited)
        return waited

    def follow_new_keys(self) -> None:
        """After TorchServe was started again it has new keys: reload the doors once they are written."""
        if self.keys_at_start is None:
            return
        key = self.key("inference")
        if key is not None and key != self.keys_at_start:
            self.keys_at_start = None
            self.reload_doors()

    def worker_thread_failed(self, name: str) -> None:
        with self.lock:
            model = self.models.get(name)
            if model is None or model.restarting:
                return
            model.restarting = True
        self.pool.submit(self.restart, model, "its worker thread failed (a reply it could not deliver)")

    def judge_unready(self, model: ModelState, now: float) -> None:
        """A model whose workers were READY and now are not: TorchServe is replacing a dead worker (it
        usually manages within seconds), or it cannot. It cannot when the new worker's process waits in
        accept() for a frontend connection that never comes: TorchServe's backend channels share a few
        netty threads, and a unary gRPC call that streamed blocks one of them for minutes (a reply it
        cannot deliver is offered to a full queue, `responseTimeout` s per frame), so a channel registered
        on that thread never connects. Scaling to 0 and back registers a channel on another thread."""
        if not model.was_ready:
            return  # still loading at start-up: not judged
        if model.unready_since is None:
            model.unready_since = now
        quiet = now - max(model.unready_since, model.cpu_at)
        if quiet >= UNREADY_GRACE_S:
            model.restarting = True
            self.pool.submit(self.restart, model, f"workers not READY and idle for {quiet:.1f} s")

    def worker_pids(self, workers: list[dict]) -> list[int]:
        """The processes of these workers (TorchServe's describe entries): by their socket in /proc where
        there is one (see `worker_processes`), else the PIDs TorchServe lists."""
        if Path("/proc/self/cmdline").exists():
            # The frontend's java.io.tmpdir is <workdir>/tmp (start_torchserve); worker "9001" listens on .ts.sock.9001.
            return worker_processes({str(self.workdir / "tmp" / f".ts.sock.{w['id']}") for w in workers})
        return [int(w["pid"]) for w in workers if w.get("pid")]

    def refresh_models(self) -> None:
        status, body = http("GET", f"{self.management}/models?limit=1000", self.key("management"))
        if status != 200:
            return
        for entry in json.loads(body)["models"]:
            name = entry["modelName"]
            status, body = http("GET", f"{self.management}/models/{name}", self.key("management"))
            if status != 200:
                continue
            described = json.loads(body)[0]
            with self.lock:
                model = self.models.setdefault(
                    name, ModelState(name, max(1, described["minWorkers"]), progress_at=time.monotonic())
                )
                model.statuses = [w["status"] for w in described["workers"]]
                model.pids = self.worker_pids(described["workers"])

    def warm(self, model: ModelState) -> None:
        """Send `warm_ups(model)`, each path once; the model is warmed when every one answered 200."""
        failed = []
        for transport, body in warm_ups(model.name):
            try:
                if transport == "rest":
                    ok = self.predict(model.name, body) == 200
                else:
                    ok = self.grpc_call(model.name, body, stream=transport == "grpc-stream")
            except (OSError, ValueError) as err:
                ok = False
                log.debug("warm-up of %s over %s failed: %s", model.name, transport, err)
            if not ok:
                failed.append(transport)
        with self.lock:
            model.warming, model.warmed = False, not failed
        if failed:
            log.warning("warm-up of %s: no answer over %s yet; trying again", model.name, ", ".join(failed))

    def grpc_call(self, model: str, body: dict, stream: bool) -> bool:
        """One StreamPredictions (every message read) or unary Predictions call; True when it succeeded."""
        if grpc is None:
            return True  # no gRPC client in this runtime: nothing to warm with
        host = self.props.get("grpc_inference_address", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        key = self.key("inference")
        metadata = [("authorization", f"Bearer {key}")] if key else []
        request = predictions_request(model, json.dumps(body).encode())
        with grpc.insecure_channel(f"{host}:{self.props['grpc_inference_port']}") as channel:
            try:
                if stream:
                    call = channel.unary_stream(f"{GRPC_SERVICE}/StreamPredictions")
                    for _ in call(request, metadata=metadata, timeout=CANARY_TIMEOUT_S):
                        pass
                else:
                    channel.unary_unary(f"{GRPC_SERVICE}/Predictions")(
                        request, metadata=metadata, timeout=CANARY_TIMEOUT_S
                    )
            except grpc.RpcError as err:
                log.debug("gRPC warm-up of %s: %s", model, err)
                return False
        return True

    def predict(self, model: str, body: dict) -> int:
        """One REST prediction with the current inference key -> its HTTP status."""
        url = f"{self.inference}/predictions/{model}"
        return http("POST", url, self.key("inference"), json.dumps(body).encode(), timeout=CANARY_TIMEOUT_S)[0]

    def canary(self, model: ModelState) -> None:
        try:
            self.predict(model.name, CANARIES[model.name])
        except OSError:  # timed out or refused: the watch loop judges by progress, not by this call
            pass
        finally:
            with self.lock:
                model.canary_sent = None

    def restart(self, model: ModelState, why: str) -> None:
        """Scale the model's workers to 0 and back: the only way out of a stalled TorchServe worker.

        Again, up to RESTART_ATTEMPTS times, when the new workers sit idle without becoming READY (their
        backend channel landed on a blocked netty thread, see `judge_unready`)."""
        began = time.monotonic()
        log.warning("restarting %s: %s", model.name, why)
        attempts = 0
        try:
            while attempts < RESTART_ATTEMPTS:
                attempts += 1
                self.scale(model.name, 0)
                if self.scale(model.name, model.workers):
                    break
                log.warning("%s: new workers idle and not READY, restarting again", model.name)
        finally:
            with self.lock:
                model.restarting, model.answered, model.canary_sent = False, False, None
                model.warmed, model.warming = False, False
                model.unready_since, model.gone_since = None, None
                model.progress_at = time.monotonic() - IDLE_PROBE_S  # a canary at once tells readiness
                model.progress, model.restarts = -1.0, model.restarts + 1
            event = {
                "event": "restart",
                "model": model.name,
                "why": why,
                "attempts": attempts,
                "seconds": round(time.monotonic() - began, 2),
                "at": time.time(),
            }
            self.events.append(event)
            log.warning("restarted %s in %.1f s", model.name, event["seconds"])

    def scale(self, name: str, count: int) -> bool:
        """Ask for `count` workers until TorchServe has exactly that many, all READY; -> whether it does.

        False after SCALE_TIMEOUT_S, or as soon as the workers, not yet READY, have used no CPU for
        UNREADY_GRACE_S (they wait for a connection that will not come). The key is read for every call:
        a restart can outlast a key renewal.
        """
        deadline = time.monotonic() + SCALE_TIMEOUT_S
        asked = False
        cpu, busy_at = None, time.monotonic()
        while time.monotonic() < deadline:
            if not asked:
                status, body = http(
                    "PUT",
                    f"{self.management}/models/{name}?min_worker={count}&max_worker={count}",
                    self.key("management"),
                )
                asked = status in (200, 202)
                if not asked:
                    log.warning("scaling %s to %d: %s %s", name, count, status, body[:200])
            status, body = http("GET", f"{self.management}/models/{name}", self.key("management"))
            if asked and status == 200:
                workers = json.loads(body)[0]["workers"]
                if len(workers) == count and all(w["status"] == "READY" for w in workers):
                    return True
                pids = self.worker_pids(workers)
                used = worker_cpu(pids) if count and len(pids) == count else None
                if used is not None and used != cpu:
                    cpu, busy_at = used, time.monotonic()
                elif used is not None and time.monotonic() - busy_at >= UNREADY_GRACE_S:
                    return False
            time.sleep(0.5)
        log.error("%s did not reach %d READY workers in %.0f s", name, count, SCALE_TIMEOUT_S)
        return False

    # keys -----------------------------------------------------------------------------------------
    def renew_keys(self, force: bool = False) -> list[str]:
        """Regenerate the inference / management key when little of its lifetime is left; -> kinds renewed."""
        keys = key_entries(self.workdir)
        if "API" not in keys:
            return []  # token authorization is off
        renewed = []
        for kind in ("inference", "management"):
            expiry = expires_at(keys.get(kind, {}))
            if force or (expiry is not None and expiry - time.time() < RENEW_AT_FRACTION * self.lifetime_s):
                status, body = http("POST", f"{self.management}/token?type={kind}", keys["API"]["key"])
                if status == 200:
                    renewed.append(kind)
                else:
                    log.error("renewing the %s key failed: %s %s", kind, status, body[:200])
        if renewed:
            self.events.append({"event": "keys renewed", "kinds": renewed, "at": time.time()})
            log.warning("renewed TorchServe keys: %s", ", ".join(renewed))
            if "inference" in renewed:
                self.reload_doors()
        return renewed

    def reload_doors(self) -> None:
        """Give every registered door the new inference key by running the reload command it registered;
        a door whose command fails (it was stopped) is forgotten. The supervisor knows no door's code."""
        doors = registered_doors(self.workdir)
        if not doors:
            return
        alive = []
        for door in doors:
            shown = " ".join(door["command"])
            try:
                done = subprocess.run(
                    door["command"], cwd=door["cwd"], capture_output=True, text=True, timeout=DOOR_RELOAD_TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                log.warning("door not reloaded (%s): %s", shown, err)
                continue
            if done.returncode == 0:
                alive.append(door)
            else:
                log.warning("door not reloaded (%s): %s", shown, done.stderr.strip()[-300:])
        forget_doors(self.workdir, alive)

    def cap_door_logs(self) -> None:
        """Roll the registered doors' logs past instance.LOG_CAP_BYTES: a door logs only what is not a 200, but a
        flood of refused requests is a line each, in nginx files nothing else rotates."""
        for door in registered_doors(self.workdir):
            if "logs" not in door:
                continue
            try:
                pid = int(Path(door["pid_file"]).read_text())
            except (OSError, ValueError):
                continue  # stopped: reload_doors forgets it
            if rolled := cap_logs(Path(door["logs"]), [pid]):
                log.info("rolled door logs in %s: %s", door["logs"], ", ".join(rolled))

    def watch(self, stop: threading.Event) -> None:
        last_cap = time.monotonic()
        while not stop.wait(POLL_S):
            try:
                self.poll()
            except (OSError, ValueError, KeyError):  # TorchServe starting or going away: look again later
                log.debug("poll failed", exc_info=True)
            if time.monotonic() - last_cap >= LOG_CHECK_S:
                last_cap = time.monotonic()
                self.cap_door_logs()


# -- readiness endpoint ---------------------------------------------------------------------------


def serve_readiness(supervisor: Supervisor, address: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == READY_PATH:
                ok, detail = supervisor.ready()
                self.answer(200 if ok else 503, {"status": "ready" if ok else "not ready", "models": detail})
            elif self.path == LIVE_PATH:  # alive while TorchServe runs or is being started again in place
                if supervisor.frontend_alive():
                    self.answer(200, {"status": "live"})
                else:
                    dead = supervisor.gave_up
                    self.answer(503 if dead else 200, {"status": "dead" if dead else "restarting"})
            elif self.path == EVENTS_PATH:
                self.answer(200, {"events": supervisor.events[-100:]})
            else:
                self.answer(404, {"status": "not found", "paths": [READY_PATH, LIVE_PATH, EVENTS_PATH]})

        def answer(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every second would flood the console
            pass

    url = urlsplit(address)
    server = ThreadingHTTPServer((url.hostname, url.port), Handler)
    threading.Thread(target=server.serve_forever, name="readiness", daemon=True).start()
    return server


# -- running TorchServe ---------------------------------------------------------------------------


def torchserve_environment(workdir: Path, environ: dict[str, str]) -> dict[str, str]:
    """What TorchServe and its workers run with: ours, less PYTHONPATH, with per-instance places and threads."""
    env = {name: value for name, value in environ.items() if name != "PYTHONPATH"}
    return {
        # Without PYTHONPATH: a worker imports what its archive carries (digitlab/, handlers/) and its venv's
        # packages. The image runs the supervisor with PYTHONPATH=/app, whose digitlab/ holds only the key-file
        # reader: handed down, it shadowed the archive's digitlab and no model loaded.
        **env,
        # One intra-op thread per worker: on a small CPU, workers competing for every core ran 3x slower.
        "OMP_NUM_THREADS": "1",
        # Per-instance temp: TMPDIR for Python, TEMP becomes the frontend's java.io.tmpdir, which holds the
        # extracted models and the worker sockets (.ts.sock.9000+). Shared, two instances delete each other's.
        "TMPDIR": str(workdir / "tmp"),
        "TEMP": str(workdir / "tmp"),
        "LOG_LOCATION": str(workdir / "logs"),
        "METRICS_LOCATION": str(workdir / "logs"),
    }


def start_torchserve(workdir: Path, config: Path, model_store: Path) -> subprocess.Popen:
    """TorchServe in the foreground as our child, in its own process group (so stopping it stops its workers)."""
    models = sorted(p.stem for p in model_store.glob("*.mar"))
    if not models:
        raise SystemExit(f"no .mar archives in {model_store}: run `make archives` first")
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # torchserve refuses to start while its own pid file (in TMPDIR) names a live process; after a
    # kill it can outlive the server and a recycled PID then blocks every restart.
    (tmp / ".model_server.pid").unlink(missing_ok=True)
    cmd = [
        str(Path(sys.executable).parent / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config.resolve()),
        "--log-config",
        str(LOG4J_CONFIG),
        "--model-store",
        str(model_store.resolve()),
        "--models",
        *[f"{m}={m}.mar" for m in models],
    ]
    # Its console comes through us (`relay_console`): the supervisor acts on some of its lines.
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=torchserve_environment(workdir, os.environ),
        process_group=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    (workdir / TORCHSERVE_PID_FILE).write_text(str(proc.pid))
    return proc


def relay_console(torchserve: subprocess.Popen, supervisor: Supervisor) -> None:
    """Copy TorchServe's console to ours line by line (it blocks if nobody reads), restarting a model
    at once when TorchServe reports that its worker thread failed."""
    for line in torchserve.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        if failed := WORKER_THREAD_FAILED.search(line):
            supervisor.worker_thread_failed(failed["model"].decode())


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM a whole process group (TorchServe's launcher, its JVM, the workers), SIGKILL what is left after
    `grace` seconds. Waiting on the launcher alone is not enough: the JVM outlives it while shutting down."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="TorchServe's working directory (keys, logs, temp)"
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the base TorchServe config")
    p.add_argument("--model-store", type=Path, default=MODEL_STORE)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [supervisor] %(levelname)s %(message)s")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    props = instance_properties(read_properties(args.config), workdir, args.model_store.resolve())
    write_properties(workdir / INSTANCE_CONFIG, props)
    supervisor = Supervisor(workdir, props)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_readiness(supervisor, props["ready_address"])  # serves from its own thread
    watcher = threading.Thread(target=supervisor.watch, args=(stop,), name="watch", daemon=True)
    watcher.start()
    code = run_torchserve(supervisor, workdir, args.model_store, stop)
    # No waiting for the pool's threads (a canary may sit in a dead server's socket until its timeout).
    os._exit(code)


def run_torchserve(supervisor: Supervisor, workdir: Path, model_store: Path, stop: threading.Event) -> int:
    """TorchServe until `stop` (SIGTERM/SIGINT): its exit code then. An end nobody asked for is a failure: it is
    started again in place (an event on /events), up to MAX_TORCHSERVE_RESTARTS within RESTART_WINDOW_S, then
    1 is returned, never 0, so that an orchestrator restarts the container."""
    restarts: list[float] = []
    while True:
        torchserve = start_torchserve(workdir, workdir / INSTANCE_CONFIG, model_store)
        supervisor.torchserve_started(torchserve)
        threading.Thread(target=relay_console, args=(torchserve, supervisor), name="console", daemon=True).start()
        log.info("TorchServe pid %d; readiness on %s%s", torchserve.pid, supervisor.props["ready_address"], READY_PATH)
        while torchserve.poll() is None and not stop.wait(0.5):
            pass
        asked = stop.is_set()
        if asked and torchserve.poll() is None:
            supervisor.drain()  # what is in flight is answered before TorchServe and its workers get SIGTERM
        stop_group(torchserve.pid, STOP_GRACE_S)  # asked: the whole group; unasked: the workers it left behind
        torchserve.wait()
        if asked:
            return torchserve.returncode or 0
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW_S]
        again = len(restarts) < MAX_TORCHSERVE_RESTARTS
        supervisor.torchserve_ended(torchserve.returncode, restarting=again)
        if not again:
            return 1
        restarts.append(now)


if __name__ == "__main__":
    sys.exit(main())
