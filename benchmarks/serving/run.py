"""Side-by-side benchmark of the ways to serve the models (`make bench`): writes docs/BENCHMARKS.md and its chart.

    python -m benchmarks.serving.run [--users 32 --seconds 10 --repeats 3]   # about 12 minutes on 2 cores
    python -m benchmarks.serving.run --smoke --doc /tmp/b.md --chart /tmp/b.png --results /tmp/b.json  # harness check

In one run, with the same locust users (loadtests/locustfile.py) against every server:
(a) the core calls in-process, batched (the compute limit); (b) TorchServe as shipped; (c) TorchServe
naive (batchSize 1, one worker, default threads); (d) a FastAPI + uvicorn server calling the same core
functions. palindrome and sample (REST): req/s, p50/p95/p99, errors; interpolate (gRPC stream): time to
first and last frame; cold start to all workers READY and RSS. Every server it starts it also stops.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from benchmarks.serving import targets
from benchmarks.serving.report import CpuShare, Record, Runs, machine_facts, write
from benchmarks.shared import inprocess
from benchmarks.shared.locust_run import LoadResult, run_locust
from clients.grpc import GrpcClient
from clients.rest import RestClient
from digitlab import catalog, workload
from digitlab.workload import FIRST_FRAME, LAST_FRAME
from tools.build_archives import ROOT

HTTP_USERS = {"ping": "PingUser", "palindrome": "PalindromeUser", "sample": "SampleUser"}  # endpoint -> locust user
SERVERS = ("torchserve", "naive", "fastapi")
# Included at the end of the report when present: the last `benchmarks.serving.tune` run, and the notes on it.
# Written for their own folder (docs/bench/): the report rebases their links to its own.
APPENDICES = tuple(
    ROOT / "docs" / "bench" / name for name in ("tuning.md", "profile.md", "peers.md", "warm_start.md", "notes.md")
)


@dataclass(frozen=True)
class Plan:
    users: int  # concurrent locust users against palindrome, sample and /ping
    seconds: int  # per locust run (and per in-process measurement)
    repeats: int
    stream_users: int  # concurrent gRPC interpolation streams
    sample_n: int
    steps: int  # frames per interpolation
    models: tuple[str, ...]  # archives the TorchServe targets serve
    endpoints: tuple[str, ...] = (*HTTP_USERS, "interpolate")  # what is measured


# Every target once, tiny and quick: one endpoint, one archive to start, one short repetition.
SMOKE = {"users": 2, "seconds": 1, "repeats": 1, "models": ("palindrome",), "endpoints": ("palindrome",)}


def warm_up(live: targets.Live, plan: Plan) -> None:
    """One request per measured model, so no locust run pays for a worker's first call (lazy init, JIT)."""
    with RestClient(live.http, live.token) as client:
        if "palindrome" in plan.endpoints:
            client.predict("palindrome", {"digits": [1, 2, 2]})
        if "sample" in plan.endpoints:
            client.predict("sample", {"n": plan.sample_n})
    if live.grpc and "interpolate" in plan.endpoints:
        path = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": plan.steps}
        with GrpcClient(live.grpc, live.token) as client:
            list(client.stream("interpolate", path))


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children: locust's, once `run_locust` has returned."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def locust_start_cpu_s(out: Path) -> float:
    """CPU seconds a locust run costs besides its requests (interpreter, imports): a run with no users."""
    before = children_cpu_s()
    run_locust(f"http://{targets.LOOPBACK}:9", 0, 1, out / "no-users", ["PingUser"], spawn_rate=1)
    return children_cpu_s() - before


def load_endpoint(
    live: targets.Live, plan: Plan, out: Path, endpoint: str, options: tuple[str, ...], locust_start_s: float
) -> tuple[LoadResult, CpuShare]:
    """One locust run against one REST endpoint, and the CPU the server and locust spent per request."""
    server, client = live.cpu_s(), children_cpu_s()
    row = run_locust(
        live.http, plan.users, plan.seconds, out / endpoint, [HTTP_USERS[endpoint]], live.token, extra_args=options
    )[endpoint]
    per_request = 1000 / max(row.requests, 1)
    client_s = max(children_cpu_s() - client - locust_start_s, 0.0)
    return row, CpuShare((live.cpu_s() - server) * per_request, client_s * per_request)


def load_server(
    live: targets.Live, plan: Plan, out: Path, locust_start_s: float
) -> tuple[dict[str, LoadResult], dict[str, CpuShare]]:
    """The locust runs against one started server: /ping, palindrome, sample, and the gRPC stream where there is one."""
    options = ("--sample-n", str(plan.sample_n), "--interpolate-steps", str(plan.steps))
    measured = {
        e: load_endpoint(live, plan, out, e, options, locust_start_s) for e in HTTP_USERS if e in plan.endpoints
    }
    rows, cpu = {e: m[0] for e, m in measured.items()}, {e: m[1] for e, m in measured.items()}
    if live.grpc and "interpolate" in plan.endpoints:
        stats = run_locust(
            live.http,
            plan.stream_users,
            plan.seconds,
            out / "interpolate",
            ["GrpcUser"],
            live.token,
            extra_args=(*options, "--grpc-target", live.grpc, "--tags", "interpolate"),
        )
        rows |= {name: stats[name] for name in (FIRST_FRAME, LAST_FRAME)}
    return rows, cpu


def servers(plan: Plan, workdir: Path) -> dict[str, Callable[[Path], AbstractContextManager[targets.Live]]]:
    """Each server target as `start(its workdir)`; archives are built once, here."""
    project = targets.build_store(workdir / "store-project", plan.models)
    naive = targets.build_store(workdir / "store-naive", plan.models, targets.naive_overrides)
    naive_env = {"OMP_NUM_THREADS": str(targets.TORCH_DEFAULT_THREADS)}
    return {
        "torchserve": lambda here: targets.torchserve(here, project),
        "naive": lambda here: targets.torchserve(here, naive, env=naive_env),
        "fastapi": lambda here: targets.fastapi(here / "fastapi.log"),
    }


def progress(rep: int, plan: Plan, target: str, loads: dict[str, LoadResult]) -> None:
    shown = ", ".join(f"{name} {r.rps:.0f} req/s p99 {r.p99_ms:.0f} ms ({r.failures} err)" for name, r in loads.items())
    print(f"[{rep + 1}/{plan.repeats}] {target}: {shown}", flush=True)


def run(plan: Plan, workdir: Path) -> dict[str, Runs]:
    start = servers(plan, workdir)
    locust_start_s = locust_start_cpu_s(workdir)
    runs = {target: Runs() for target in ("inprocess", *SERVERS)}
    for rep in range(plan.repeats):
        loads = inprocess.measure(plan.endpoints, plan.seconds, plan.sample_n, plan.steps, seed=rep)
        runs["inprocess"].add(loads)
        progress(rep, plan, "inprocess", loads)
        for target in SERVERS:  # the same order every repetition: alternating, so drift hits every target
            here = workdir / f"{target}-{rep}"
            here.mkdir()
            with start[target](here) as live:
                warm_up(live, plan)
                loads, cpu = load_server(live, plan, here, locust_start_s)
                runs[target].add(loads, live.cold_start_s, live.rss_mb(), cpu)
            progress(rep, plan, target, loads)
    return runs


def measure(plan: Plan, command: str) -> Record:
    began, load_before = time.monotonic(), psutil.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        runs = run(plan, Path(tmp))
    settings = {
        "cores": str(os.cpu_count()),
        "locust users": str(plan.users),
        "seconds per run": str(plan.seconds),
        "repetitions": str(plan.repeats),
        "gRPC streams": str(plan.stream_users),
        "sample n": str(plan.sample_n),
        "interpolation frames": str(plan.steps),
        "palindrome lengths": f"{workload.MIN_LENGTH}-{workload.MAX_LENGTH} (uniform)",
        "served archives": ", ".join(plan.models),
        "load average (1 min) before / after": f"{load_before:.1f} / {psutil.getloadavg()[0]:.1f}",
        "wall time": f"{time.monotonic() - began:.0f} s",
    }
    return Record(runs, settings, machine_facts(), command)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--users", type=int, default=32, help="concurrent locust users (palindrome, sample, ping)")
    p.add_argument("--seconds", type=int, default=10, help="length of each locust run")
    p.add_argument("--repeats", type=int, default=3, help="repetitions; the report gives medians")
    p.add_argument("--stream-users", type=int, default=1, help="concurrent gRPC interpolation streams")
    p.add_argument("--sample-n", type=int, default=workload.SAMPLE_N, help="images per sample request")
    p.add_argument("--steps", type=int, default=workload.INTERPOLATE_STEPS, help="frames per interpolation")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "bench" / "serving.png")
    p.add_argument(
        "--results", type=Path, default=ROOT / "docs" / "bench" / "results.json", help="raw numbers of the run"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write the report again from --results (e.g. after a new tuning run)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny loads and one repetition, to check the harness (seconds)")
    args = p.parse_args(argv)
    plan = Plan(args.users, args.seconds, args.repeats, args.stream_users, args.sample_n, args.steps, catalog.NAMES)
    if args.smoke:
        plan = replace(plan, **SMOKE)
    if args.report_only:
        record = Record.load(args.results)
    else:
        command = "python -m benchmarks.serving.run " + shlex.join(argv if argv is not None else sys.argv[1:])
        record = measure(plan, command.strip())
        record.save(args.results)
    write(record, args.doc, args.chart, () if args.smoke else APPENDICES)
    print(f"wrote {args.doc}, {args.chart} and {args.results}")


if __name__ == "__main__":
    main()
