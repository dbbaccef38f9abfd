"""A model's worker processes as the operating system sees them (psutil), and scaling them to a count.

TorchServe's management API lists a worker's PID only once the frontend has read it from the worker's
output, and keeps listing a dead one; the supervisor therefore finds a worker by the socket it listens on,
from its first instruction, and judges it by the CPU it uses: a worker loading its model, or busy, burns CPU;
one waiting for a connection that will not come sits idle in accept().
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psutil

from ops.api import TorchServeAPI
from ops.state import UNREADY_GRACE_S

log = logging.getLogger("supervisor")

SCALE_TIMEOUT_S = 120.0  # longest wait for workers to leave or come back when restarting a model


def worker_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user + system, not their children's) the processes have used; None if one is gone or
    there are none."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        total += times.user + times.system
    return total if pids else None


def worker_processes(sockets: set[str]) -> list[int]:
    """PIDs of the Python workers listening on these socket paths, found by their command line
    (`--sock-name <path>`); a worker TorchServe is starting again under the same id (so the same socket)
    is found here from its first instruction."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []  # None: not ours to read; []: a zombie
        if "--sock-name" in args and (i := args.index("--sock-name") + 1) < len(args) and args[i] in sockets:
            found.append(proc.pid)
    return found  # by PID: psutil lists processes in that order


def worker_pids(workdir: Path, workers: list[dict]) -> list[int]:
    """The processes of these workers (TorchServe's describe entries): by their socket on Linux, where the
    socket's path is known, else the PIDs TorchServe lists."""
    if psutil.LINUX:
        # The frontend's java.io.tmpdir is <workdir>/tmp (ops.launcher); worker "9001" listens on .ts.sock.9001.
        return worker_processes({str(workdir / "tmp" / f".ts.sock.{w['id']}") for w in workers})
    return [int(w["pid"]) for w in workers if w.get("pid")]


def scale(api: TorchServeAPI, name: str, count: int) -> bool:
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
            asked = api.ask_scale(name, count)
        described = api.describe(name)
        if asked and described is not None:
            workers = described["workers"]
            if len(workers) == count and all(w["status"] == "READY" for w in workers):
                return True
            pids = worker_pids(api.workdir, workers)
            used = worker_cpu(pids) if count and len(pids) == count else None
            if used is not None and used != cpu:
                cpu, busy_at = used, time.monotonic()
            elif used is not None and time.monotonic() - busy_at >= UNREADY_GRACE_S:
                return False
        time.sleep(0.5)
    log.error("%s did not reach %d READY workers in %.0f s", name, count, SCALE_TIMEOUT_S)
    return False
