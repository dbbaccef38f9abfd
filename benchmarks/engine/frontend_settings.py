"""Tune TorchServe's frontend by measurement: netty threads, job queue, JVM garbage collector, async logging.

    python -m benchmarks.engine.frontend_settings [--rounds 3] [--seconds 8] [--clients 32]

A frontend setting is the instance's, not a model's, so each variant is its own TorchServe (the shipped
config.properties with one change) serving the shipped `palindrome` archive and the no-op handler. In each
instance `ab -k` drives the palindrome and the no-op in turn; `--rounds` rounds start every variant again,
in the same order, so that all meet the same machine. Prints a Markdown table of medians (req/s and p99 of
both, the palindrome's ratio to its own instance's no-op, and its req/s against the shipped instance's)
and writes runs/engine/frontend.json. About 10 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.shared.ab import Target, ab
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import REFERENCE, noop_archive
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import ROOT, build

OUT = ROOT / "runs" / "engine"
SHIPPED = "shipped (netty threads = cores, queue 1,000, parallel GC, sync logging)"
# name -> config.properties overrides
VARIANTS: dict[str, dict[str, str]] = {
    SHIPPED: {},
    "netty threads 1, client threads 1": {"number_of_netty_threads": "1", "netty_client_threads": "1"},
    "netty threads 4, client threads 4": {"number_of_netty_threads": "4", "netty_client_threads": "4"},
    "job queue 100": {"job_queue_size": "100"},
    "JVM: G1 (the JVM's default)": {"vmargs": "-XX:+ExitOnOutOfMemoryError"},
    "JVM: serial GC": {"vmargs": "-XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError"},
    "async logging": {"async_logging": "true"},
}


def measure(store: Path, workdir: Path, overrides: dict[str, str], seconds: float, clients: int) -> dict:
    """One instance with `overrides`: the palindrome and the no-op, one `ab` run each after a warm-up."""
    with ops_server.serving(workdir, store, timeout=600, overrides=overrides) as server:
        auth = {"Authorization": f"Bearer {server.key()}"}
        targets = {m: Target(f"{server.endpoints.inference}/predictions/{m}", auth) for m in ("palindrome", REFERENCE)}
        for target in targets.values():
            ab(target, 1, 1)
        out = {}
        for model, target in targets.items():
            out[model] = ab(target, seconds, clients)
            time.sleep(1)
        return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {label: [] for label in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build("palindrome", catalog.model("palindrome"), store)
        noop_archive(store)
        for rnd in range(args.rounds):
            for i, (label, overrides) in enumerate(VARIANTS.items()):
                measured = measure(store, Path(tmp) / f"ts-{rnd}-{i}", overrides, args.seconds, args.clients)
                runs[label].append(measured)
                print(f"round {rnd + 1}: {label}: {measured}", file=sys.stderr, flush=True)
    shipped = statistics.median(r["palindrome"].rps for r in runs[SHIPPED])
    rows = []
    for label, results in runs.items():
        rps = statistics.median(r["palindrome"].rps for r in results)
        rows.append(
            {
                "variant": label,
                "rps": rps,
                "p99_ms": statistics.median(r["palindrome"].p99_ms for r in results),
                "noop_rps": statistics.median(r[REFERENCE].rps for r in results),
                "noop_p99_ms": statistics.median(r[REFERENCE].p99_ms for r in results),
                "vs_noop": statistics.median(r["palindrome"].rps / r[REFERENCE].rps for r in results),
                "vs_shipped": rps / shipped,
                "runs": [round(r["palindrome"].rps) for r in results],
                "failed": sum(r["palindrome"].failed + r[REFERENCE].failed for r in results),
            }
        )
    header = ["variant", "palindrome req/s", "p99 ms", "no-op req/s", "no-op p99 ms", "× its no-op", "× shipped"]
    cells = [
        [
            r["variant"],
            f"{r['rps']:,.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['noop_rps']:,.0f}",
            f"{r['noop_p99_ms']:.0f}",
            f"{r['vs_noop']:.2f}",
            f"{r['vs_shipped']:.2f}",
            r["runs"],
            r["failed"],
        ]
        for r in rows
    ]
    print(markdown_table([*header, "per round", "failed"], cells, "lrrrrrrlr"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "frontend.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
