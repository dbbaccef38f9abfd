"""End to end: a gRPC interpolation the client cancels costs the worker and TorchServe's logs almost nothing.

TorchServe 0.12 tells a worker nothing when a client goes away; its frontend only logs, per frame it can no
longer deliver, one WARN line with the request id (GRPCJob). log4j2.xml routes those lines to
`cancelled_streams.log`, which the handler reads between frames to stop a cancelled stream
(handlers/common.py, `CancelledStreams`; docs/OPERATIONS.md, "Cancelled streams and TorchServe's own logs").
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from clients.grpc import request_message

pytestmark = pytest.mark.server

CALLS = 30
CANCELLED = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 64, "stream": True}
WHOLE = {**CANCELLED, "steps": 4}
LOG_BUDGET = 60_000  # bytes, all of TorchServe's logs together, for the 30 cancelled calls
CPU_RATIO = 3.0  # the cancelled calls' worker CPU against that of 30 whole 4-frame streams


def logged_bytes(workdir: Path) -> int:
    """Everything TorchServe has logged so far: its log directory (rolled archives too) and the console."""
    files = [p for p in (workdir / "logs").rglob("*") if p.is_file()] + [workdir / "console.log"]
    return sum(p.stat().st_size for p in files if p.exists())


def worker_cpu(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def stream(grpc_client, key: str, payload: dict, cancel_after: int | None = None) -> int:
    """One StreamPredictions call: read every frame, or cancel it after `cancel_after` frames; -> frames read."""
    call = grpc_client.stub.StreamPredictions(
        request_message("interpolate", payload), metadata=[("authorization", f"Bearer {key}")], timeout=60
    )
    read = 0
    for _ in call:
        read += 1
        if read == cancel_after:
            call.cancel()
            break
    return read


def test_a_cancelled_stream_stops_rendering_and_leaves_almost_no_log(server, grpc_client):
    key = server.key()
    pids = server.worker_pids("interpolate")
    assert stream(grpc_client, key, WHOLE) == 4  # warm

    cpu = worker_cpu(pids)
    began = time.monotonic()
    for _ in range(CALLS):
        assert stream(grpc_client, key, WHOLE) == 4
    whole_cpu, whole_s = worker_cpu(pids) - cpu, time.monotonic() - began

    logged, cpu = logged_bytes(server.workdir), worker_cpu(pids)
    began = time.monotonic()
    for _ in range(CALLS):
        assert stream(grpc_client, key, CANCELLED, cancel_after=1) == 1
    # One worker serves the model and takes its queue in order: once a whole call after them has been
    # answered, whatever the worker still did for the cancelled calls is done, and logged.
    assert stream(grpc_client, key, {**WHOLE, "steps": 2}) == 2
    cancelled_cpu, cancelled_s = worker_cpu(pids) - cpu, time.monotonic() - began
    added = logged_bytes(server.workdir) - logged

    print(
        f"\n{CALLS} whole 4-frame streams: worker CPU {whole_cpu:.2f} s ({whole_s:.1f} s wall); "
        f"{CALLS} 64-frame streams cancelled after 1 frame: worker CPU {cancelled_cpu:.2f} s "
        f"({cancelled_s:.1f} s wall), {added} bytes logged"
    )
    assert server.worker_pids("interpolate") == pids
    assert added < LOG_BUDGET, f"{CALLS} cancelled streams logged {added} bytes"
    assert cancelled_cpu <= CPU_RATIO * whole_cpu, (
        f"{CALLS} cancelled streams cost the worker {cancelled_cpu:.2f} s of CPU, "
        f"{CALLS} whole 4-frame streams {whole_cpu:.2f} s"
    )
