"""sample and interpolate under 32 clients: this checkout's handlers against an earlier commit's, and the ceiling.

    python -m benchmarks.engine.gan_paths [--then 5bf101c] [--rounds 3] [--seconds 10] [--clients 32]

The engine work on the palindrome path (handlers/common.py: no per-batch log and metric lines, headers read
once, answers built once) changed the code every model runs. This checks that the GAN models lost nothing:
their archives built from this checkout and from the commit `--then` (a git worktree; its own handlers,
digitlab/ and weights), and the no-op handler with each model's config (its ceiling), all in one
TorchServe; `ab -k -c 32` posts one request body per model to each in turn, `--rounds` rounds. Prints a
Markdown table of medians (req/s, p50, p99, ratio to the no-op) and writes runs/engine/gan_paths.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.shared.ab import Target, ab
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import noop_archive
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import ROOT, build

OUT = ROOT / "runs" / "engine"
MODELS = ("sample", "interpolate")
# What a page of the try-it page asks for: 8 thumbnails; a 16-frame strip.
BODIES = {
    "sample": json.dumps({"n": 8, "seed": 3}),
    "interpolate": json.dumps({"start": {"seed": 5, "index": 0}, "end": {"seed": 5, "index": 1}, "steps": 16}),
}


def then_archives(commit: str, store: Path, tmp: Path) -> None:
    """sample_then.mar and interpolate_then.mar: the archives as `commit` built them."""
    tree = tmp / "then"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True, capture_output=True)
    try:
        subprocess.run([sys.executable, "-m", "tools.build_archives", *MODELS], cwd=tree, check=True)
        for model in MODELS:
            shutil.copy2(tree / "model_store" / f"{model}.mar", store / f"{model}_then.mar")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--then", default="5bf101c", help="the earlier commit (default: before the engine work)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        then_archives(args.then, store, Path(tmp))
        for model in MODELS:
            build(model, catalog.model(model), store)
            noop_archive(store, f"noop_{model}", like=model)
        variants = {f"{m} {kind}": (m, name) for m in MODELS for kind, name in
                    (("now", m), (f"at {args.then}", f"{m}_then"), ("no-op (its ceiling)", f"noop_{m}"))}  # fmt: skip
        runs: dict[str, list] = {label: [] for label in variants}
        with ops_server.serving(Path(tmp) / "ts", store, timeout=600) as server:
            auth = {"Authorization": f"Bearer {server.key()}"}
            targets = {
                label: (Target(f"{server.endpoints.inference}/predictions/{name}", auth), BODIES[model])
                for label, (model, name) in variants.items()
            }
            for target, body in targets.values():
                ab(target, 1, 1, body)
            for rnd in range(args.rounds):
                for label, (target, body) in targets.items():
                    runs[label].append(ab(target, args.seconds, args.clients, body))
                    print(f"round {rnd + 1}: {label} {runs[label][-1]}", file=sys.stderr, flush=True)
                    time.sleep(1)
    rows = []
    for label, results in runs.items():
        model = variants[label][0]
        ceiling = statistics.median(r.rps for r in runs[f"{model} no-op (its ceiling)"])
        rps = statistics.median(r.rps for r in results)
        rows.append(
            {
                "variant": label,
                "rps": rps,
                "p99_ms": statistics.median(r.p99_ms for r in results),
                "vs_noop": rps / ceiling,
                "runs": [round(r.rps) for r in results],
                "p99_runs": [r.p99_ms for r in results],
                "failed": sum(r.failed for r in results),
            }
        )
    header = ["variant", "req/s", "p99 ms", "× its no-op", "req/s per round", "p99 per round", "failed"]
    cells = [
        [
            r["variant"],
            f"{r['rps']:,.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['vs_noop']:.2f}",
            r["runs"],
            r["p99_runs"],
            r["failed"],
        ]
        for r in rows
    ]
    print(markdown_table(header, cells, "lrrrllr"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gan_paths.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
