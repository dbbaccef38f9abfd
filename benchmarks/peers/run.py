"""Peers in one run: the shipped TorchServe against its own ceiling, the door, LitServe, Ray Serve, in-process.

    python -m benchmarks.peers.run [--repeats 3] [--seconds 10] [--clients 32]     (make bench-peers)

Apache Bench (`ab -k`, a C client: a Python one caps out below the server on 2 cores) sends the same
T = 15 palindrome body to each target in turn, `--repeats` times round the list, so that every target
meets the same machine state as often as the others:

- torchserve:  the shipped `palindrome` (handler, archive, model config, instance config);
- noop:        a no-op handler (benchmarks/shared/noop_handler.py: parse the JSON, answer a fixed digit) in the same
               TorchServe with the same model config: the engine's ceiling, the reference of every ratio;
- door:        the door in front of that TorchServe, per-client limits off (DIGITLAB_LIMITS=off);
- litserve:    the serving layer under LitServe, same batching, one worker (when `litserve` is installed:
               `make bench-peers` installs the pinned `peers` extra);
- ray serve:   the serving layer under Ray Serve, one replica, `@serve.batch` with the same batching (the
               same extra);
- in-process:  the serving layer called in this process in batches of 16, no HTTP (benchmarks.shared.inprocess).

Prints a Markdown table (medians of req/s and p99, ratios to noop), writes runs/peers/peers.json and
docs/bench/peers.md + docs/bench/peers.png (the appendix of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from pathlib import Path

from matplotlib.figure import Figure

from benchmarks.shared import inprocess
from benchmarks.shared.ab import AB_HINT, BODY, Result, Target, ab
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import REFERENCE, noop_archive, unlimited_door, wait_answering
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import ROOT, build

OUT = ROOT / "runs" / "peers"
DOC, CHART = ROOT / "docs" / "bench" / "peers.md", ROOT / "docs" / "bench" / "peers.png"


@contextmanager
def torchserve_and_door(workdir: Path) -> Iterator[dict[str, Target]]:
    """One TorchServe serving `palindrome` and `noop`, and a door with limits off in front of it."""
    store = workdir / "store"
    build("palindrome", catalog.model("palindrome"), store)
    noop_archive(store)
    with ops_server.serving(workdir / "ts", store) as server, unlimited_door(server, workdir / "door") as door:
        auth = {"Authorization": f"Bearer {server.key()}"}
        yield {
            "torchserve": Target(f"{server.endpoints.inference}/predictions/palindrome", auth),
            REFERENCE: Target(f"{server.endpoints.inference}/predictions/{REFERENCE}", auth),
            "door": Target(f"{door.url}palindrome", door.headers),
        }


def wait_predicting(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until `url` answers BODY with 200: Ray's proxy listens before the application is deployed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}'s server exited with {proc.returncode} during start-up")
        request = urllib.request.Request(url, BODY.encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} after {timeout:.0f}s")


@contextmanager
def peer(
    name: str, module: str, package: str, log: Path, wait: Callable[[str, subprocess.Popen], None]
) -> Iterator[dict[str, Target]]:
    """`python -m module --port P` on a free port, once `wait(base_url, process)` returns: {name: its /predict};
    nothing when `package` is not installed. Its session is killed with it (Ray's own processes, say)."""
    if importlib.util.find_spec(package.split(".")[0]) is None:
        print(f"{package} not installed: `make bench-peers` installs the peers extra", file=sys.stderr)
        yield {}
        return
    port = ops_server.free_ports(1)[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait(url, proc)
        yield {name: Target(f"{url}/predict", {})}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def litserve(log: Path) -> AbstractContextManager[dict[str, Target]]:
    """benchmarks/peers/litserve_server.py, ready once its /health answers."""
    return peer(
        "litserve",
        "benchmarks.peers.litserve_server",
        "litserve",
        log,
        lambda url, p: wait_answering(f"{url}/health", p, 240),
    )


def ray_serve(log: Path) -> AbstractContextManager[dict[str, Target]]:
    """benchmarks/peers/ray_server.py (it shuts Ray down on SIGTERM), ready once /predict answers."""
    return peer(
        "ray serve",
        "benchmarks.peers.ray_server",
        "ray.serve",
        log,
        lambda url, p: wait_predicting(f"{url}/predict", p, 240),
    )


def in_process(seconds: float) -> Result:
    result = inprocess.timed_batches("palindrome", [BODY.encode()] * inprocess.POOL, seconds)
    return Result(result.rps, result.p99_ms, 0)


def table(results: dict[str, list[Result]]) -> list[dict]:
    ceiling = statistics.median(r.rps for r in results[REFERENCE])
    rows = []
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        rows.append(
            {
                "target": name,
                "rps": rps,
                "p99_ms": statistics.median(r.p99_ms for r in runs),
                "vs_noop": rps / ceiling,
                "runs": [round(r.rps) for r in runs],
                "failed": sum(r.failed for r in runs),
            }
        )
    return rows


def markdown(rows: list[dict], args: argparse.Namespace, doc: Path = DOC, chart_path: Path = CHART) -> str:
    """docs/bench/peers.md: its picture's path is from that page's folder (`make bench` rebases it when it
    includes the page in docs/BENCHMARKS.md)."""
    lines = [
        "## Peers in one run (`make bench-peers`)",
        "",
        f"`python -m benchmarks.peers.run --repeats {args.repeats} --seconds {args.seconds} --clients {args.clients}`: "
        f"`ab -k -c {args.clients} -t {args.seconds}` with one T = 15 palindrome body, the targets in turn, "
        f"{args.repeats} rounds; medians, and req/s as a ratio to the no-op handler in the same TorchServe "
        "(the engine's ceiling). In-process has no HTTP: the serving layer in batches of 16, one thread.",
        "",
        markdown_table(
            ["target", "req/s", "p99 ms", "× no-op", "req/s per round", "failed"],
            [
                [
                    r["target"],
                    f"{r['rps']:,.0f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['vs_noop']:.2f}",
                    ", ".join(f"{x:,}" for x in r["runs"]),
                    r["failed"],
                ]
                for r in rows
            ],
            "lrrrlr",
        ),
    ]
    rps = {r["target"]: r["rps"] for r in rows}
    if "door" in rps and "torchserve" in rps:
        lines += [
            "",
            f"The door with per-client limits off carries {rps['door'] / rps['torchserve']:.2f}× what TorchServe "
            "does directly.",
        ]
    if "ray serve" in rps:
        lines += [
            "",
            "Ray Serve runs a local Ray cluster beside the others (its GCS, raylet and proxy processes stay up "
            "while the other targets are measured); its replica is one process with one CPU, batched by "
            "`@serve.batch` with the same size and delay.",
        ]
    picture = Path(os.path.relpath(chart_path, doc.parent)).as_posix()
    return "\n".join(lines) + f"\n\n![req/s and p99 per target]({picture})\n"


def chart(rows: list[dict], path: Path) -> None:
    fig = Figure(figsize=(8, 3.4))
    left, right = fig.subplots(1, 2)
    names = [r["target"] for r in rows]
    left.barh(names, [r["rps"] for r in rows], color="#4c72b0")
    left.set(xlabel="requests/s (median)", title="throughput")
    for y, r in enumerate(rows):
        left.text(r["rps"], y, f" {r['vs_noop']:.2f}×", va="center", fontsize=8)
    right.barh(names, [r["p99_ms"] for r in rows], color="#dd8452")
    right.set(xlabel="p99 ms (median)", title="tail latency")
    right.set_yticks(range(len(names)), [""] * len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="rounds over the targets")
    p.add_argument("--seconds", type=float, default=10, help="length of one ab run")
    p.add_argument("--clients", type=int, default=32, help="ab's concurrent connections")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/bench/ as it is")
    p.add_argument("--from-json", action="store_true", help="no load: rewrite the page from runs/peers/peers.json")
    args = p.parse_args(argv)
    if args.from_json:
        rows = json.loads((OUT / "peers.json").read_text())
        DOC.write_text(markdown(rows, args))
        chart(rows, CHART)
        return rows
    if shutil.which("ab") is None:
        raise SystemExit(AB_HINT)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        targets = {
            **stack.enter_context(torchserve_and_door(Path(tmp))),
            **stack.enter_context(litserve(OUT / "litserve.log")),
            **stack.enter_context(ray_serve(OUT / "ray_serve.log")),
        }
        order: dict[str, Callable[[], Result]] = {
            n: (lambda t=t: ab(t, args.seconds, args.clients)) for n, t in targets.items()
        }
        order["in-process"] = lambda: in_process(args.seconds)
        for target in targets.values():  # one warm-up call each, not timed
            ab(target, 1, 1)
        results: dict[str, list[Result]] = {name: [] for name in order}
        for rnd in range(args.repeats):
            for name, run in order.items():
                results[name].append(run())
                print(f"round {rnd + 1}: {name} {results[name][-1]}", file=sys.stderr)
                time.sleep(1)
    rows = table(results)
    text = markdown(rows, args)
    print(text)
    (OUT / "peers.json").write_text(json.dumps(rows, indent=2))
    if not args.no_write:
        DOC.write_text(text)
        chart(rows, CHART)
    return rows


if __name__ == "__main__":
    main()
