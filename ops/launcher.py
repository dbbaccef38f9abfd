"""TorchServe as the supervisor's child: started in a process group of its own, its console relayed, stopped
with its workers, and started again in place when it ends without being asked.

A killed JVM exits TorchServe's launcher with 0; the supervisor does not pass that on: the end is an event,
TorchServe is started again up to MAX_TORCHSERVE_RESTARTS times within RESTART_WINDOW_S, and after that
`run_torchserve` returns 1, so that the orchestrator restarts the container (compose's restart: on-failure,
Kubernetes).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ops.instance import INSTANCE_CONFIG, READY_PATH, ROOT, TORCHSERVE_PID_FILE, archives, group_alive
from ops.watch import Supervisor

log = logging.getLogger("supervisor")
console = logging.getLogger("torchserve")  # TorchServe's console lines, relayed

LOG4J_CONFIG = ROOT / "log4j2.xml"
STOP_GRACE_S = 10.0  # TorchServe's own shutdown (workers finish their batch) before SIGKILL
# TorchServe ending without being asked (its JVM killed by the OOM killer, a crash) is restarted in place, at
# most this often within RESTART_WINDOW_S; beyond that the supervisor exits non-zero for its orchestrator.
MAX_TORCHSERVE_RESTARTS = 3
RESTART_WINDOW_S = 300.0
# TorchServe's console line (log4j2.xml's pattern: date [LEVEL] thread logger - message) when a worker thread
# left its loop on a reply it could not deliver -- a unary gRPC call that streamed. That model answers
# nothing more until its workers are restarted, so this restarts it at once instead of waiting for a canary.
WORKER_THREAD_FAILED = re.compile(
    rb"\[ERROR\] W-\d+-(?P<model>[A-Za-z0-9_]+)_[^ _]+ org\.pytorch\.serve\.wlm\.WorkerThread - IllegalStateException"
)


def run_torchserve(supervisor: Supervisor, workdir: Path, model_store: Path, stop: threading.Event) -> int:
    """TorchServe until `stop` (SIGTERM/SIGINT): its exit code then. An end nobody asked for is a failure: it is
    started again in place (an event on /events), up to MAX_TORCHSERVE_RESTARTS within RESTART_WINDOW_S, then
    1 is returned, never 0, so that an orchestrator restarts the container."""
    restarts: list[float] = []
    while True:
        torchserve = start_torchserve(workdir, workdir / INSTANCE_CONFIG, model_store)
        supervisor.torchserve_started(torchserve)
        threading.Thread(target=relay_console, args=(torchserve, supervisor), name="console", daemon=True).start()
        log.info("TorchServe pid %d; readiness on %s%s", torchserve.pid, supervisor.settings.ready_address, READY_PATH)
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
        log.error(
            "TorchServe exited with %s without being asked: %s",
            torchserve.returncode,
            "starting it again"
            if again
            else f"{MAX_TORCHSERVE_RESTARTS} restarts in {RESTART_WINDOW_S:.0f} s, giving up",
        )
        if not again:
            return 1
        restarts.append(now)


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
    models = archives(model_store)
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
        console.info(line.decode("utf-8", "replace").rstrip("\n"))  # one JSON line each, where ours go
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
