"""The servers `make bench` and `benchmarks.serving.tune` measure, each a context manager yielding a `Live` server.

TorchServe variants are built from this checkout into private model stores (so model-config overrides
never touch model_store/) and served on free ports; the FastAPI baseline runs as a subprocess.
Everything started here is stopped on exit, whatever happens inside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.shared.servers import wait_answering
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import ROOT, build

MB = 2**20
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 240.0  # seconds for every worker READY on a busy 2-core machine
# torch's own default without OMP_NUM_THREADS: one intra-op thread per core.
TORCH_DEFAULT_THREADS = os.cpu_count() or 1


@dataclass(frozen=True)
class Live:
    """A started server: where to send load, and what its start cost."""

    http: str
    grpc: str | None  # host:port of the gRPC inference API, None where there is none
    token: str | None
    cold_start_s: float  # launch to every worker READY (TorchServe) / to the first answer (FastAPI)
    pid: int  # the process tree to weigh
    worker_pids: Callable[[], list[int]]  # the processes that run the model

    def rss_mb(self) -> tuple[float, float]:
        """(resident memory of the model workers, of the whole server process tree), in MiB."""
        return rss_mb(self.worker_pids()), rss_mb(tree(self.pid))

    def cpu_s(self) -> float:
        """CPU seconds used so far by the whole server process tree (frontend and workers)."""
        return sum(per_process(tree(self.pid), lambda p: sum(p.cpu_times()[:2])))


def tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [pid, *(child.pid for child in root.children(recursive=True))]


def per_process(pids: Iterable[int], read: Callable[[psutil.Process], float]) -> list[float]:
    values = []
    for pid in pids:
        try:
            values.append(read(psutil.Process(pid)))
        except psutil.NoSuchProcess:  # a worker restarting between listing and reading
            pass
    return values


def rss_mb(pids: Iterable[int]) -> float:
    return sum(per_process(pids, lambda p: p.memory_info().rss)) / MB


def naive_overrides(name: str) -> dict[str, Any]:
    """(c): no batching, one worker, and the handler left to torch's default thread count."""
    return {
        "batchSize": 1,
        "minWorkers": 1,
        "maxWorkers": 1,
        "handler": {**catalog.model(name).model_config()["handler"], "threads": TORCH_DEFAULT_THREADS},
    }


def build_store(store: Path, models: Iterable[str], overrides: Callable[[str], dict[str, Any]] | None = None) -> Path:
    for name in models:
        build(name, catalog.model(name), store, overrides(name) if overrides else None)
    return store


@contextmanager
def torchserve(
    workdir: Path, store: Path, base_config: Path = ROOT / "config.properties", env: dict[str, str] | None = None
) -> Iterator[Live]:
    with ops_server.serving(workdir, store, base_config, timeout=START_TIMEOUT, env=env) as server:
        yield Live(
            server.endpoints.inference,
            server.endpoints.grpc_inference,
            server.key(),
            server.ready_s,
            server.pid,
            lambda: [pid for model in server.models for pid in server.worker_pids(model)],
        )


@contextmanager
def fastapi(log: Path, threads: int = 1) -> Iterator[Live]:
    """benchmarks/serving/fastapi_server.py on a free port, with the thread settings of one TorchServe worker."""
    port = ops_server.free_ports(1)[0]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.serving.fastapi_server",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://{LOOPBACK}:{port}"
        wait_answering(f"{url}/ping", proc, START_TIMEOUT)
        yield Live(url, None, None, time.monotonic() - began, proc.pid, lambda: [proc.pid])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
