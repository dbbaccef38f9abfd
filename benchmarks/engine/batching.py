"""Tune the engine by measurement: the palindrome model's batching and workers, side by side in one TorchServe.

    python -m benchmarks.engine.batching [--repeats 3] [--seconds 8] [--clients 32]

Every variant is the shipped `palindrome` archive with one model-config change, served as its own model in
one TorchServe (the shipped instance config) beside the no-op handler; `ab -k` drives each in turn,
`--repeats` rounds, so that all meet the same machine. Prints a Markdown table of medians (req/s, p99 and
the ratio to the no-op ceiling) and writes runs/engine/engine.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.shared.ab import Target, ab
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import REFERENCE, noop_archive
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import ROOT, build

OUT = ROOT / "runs" / "engine"
SHIPPED = catalog.model("palindrome").model_config()
# name -> model-config overrides of the shipped palindrome config
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped (batch 16, delay 5 ms, 1 worker)": {},
    "batch 8": {"batchSize": 8},
    "batch 32": {"batchSize": 32},
    "batch 64": {"batchSize": 64},
    "delay 1 ms": {"maxBatchDelay": 1},
    "delay 20 ms": {"maxBatchDelay": 20},
    "2 workers": {"minWorkers": 2, "maxWorkers": 2},
    "2 workers, batch 8": {"minWorkers": 2, "maxWorkers": 2, "batchSize": 8},
    "2 workers, batch 32": {"minWorkers": 2, "maxWorkers": 2, "batchSize": 32},
    "3 workers": {"minWorkers": 3, "maxWorkers": 3},
}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    names = {label: f"v{i}" for i, label in enumerate(VARIANTS)}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        for label, overrides in VARIANTS.items():
            build(names[label], catalog.model("palindrome"), store, overrides)
        noop_archive(store)
        with ops_server.serving(Path(tmp) / "ts", store, timeout=600) as server:
            auth = {"Authorization": f"Bearer {server.key()}"}
            targets = {label: f"{server.endpoints.inference}/predictions/{names[label]}" for label in VARIANTS}
            targets["no-op handler (the ceiling)"] = f"{server.endpoints.inference}/predictions/{REFERENCE}"
            runs: dict[str, list] = {label: [] for label in targets}
            for url in targets.values():
                ab(Target(url, auth), 1, 1)
            for rnd in range(args.repeats):
                for label, url in targets.items():
                    runs[label].append(ab(Target(url, auth), args.seconds, args.clients))
                    print(f"round {rnd + 1}: {label} {runs[label][-1]}", file=sys.stderr)
                    time.sleep(1)
    ceiling = statistics.median(r.rps for r in runs["no-op handler (the ceiling)"])
    rows = [
        {
            "variant": label,
            "rps": statistics.median(r.rps for r in results),
            "p99_ms": statistics.median(r.p99_ms for r in results),
            "vs_noop": statistics.median(r.rps for r in results) / ceiling,
            "runs": [round(r.rps) for r in results],
        }
        for label, results in runs.items()
    ]
    print(
        markdown_table(
            ["variant", "req/s", "p99 ms", "× no-op", "per round"],
            [[r["variant"], f"{r['rps']:,.0f}", f"{r['p99_ms']:.1f}", f"{r['vs_noop']:.2f}", r["runs"]] for r in rows],
            "lrrrl",
        )
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
