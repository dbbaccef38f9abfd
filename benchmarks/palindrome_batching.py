"""Palindrome throughput with the shipped batching vs batch_size 1, measured side by side.

    python -m benchmarks.palindrome_batching --users 32 --seconds 20 --repeats 3

Each repetition serves both variants in turn (alternating, so drift on a noisy machine hits both),
each on its own private TorchServe; the table gives medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import yaml

from benchmarks.locust_run import run_locust
from tools import server as ts
from tools.build_archives import ARCHIVES, ROOT, build

SHIPPED = yaml.safe_load((ROOT / ARCHIVES["palindrome"].config).read_text())
VARIANTS = {
    f"shipped (batchSize {SHIPPED['batchSize']}, maxBatchDelay {SHIPPED['maxBatchDelay']} ms)": {},
    "batchSize 1": {"batchSize": 1, "maxBatchDelay": 0},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    results: dict[str, list] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for i, (variant, overrides) in enumerate(VARIANTS.items()):
            stores[variant] = Path(tmp) / f"store{i}"
            build("palindrome", ARCHIVES["palindrome"], stores[variant], overrides)
        for rep in range(args.repeats):
            for i, variant in enumerate(VARIANTS):
                with ts.serving(Path(tmp) / f"run{rep}-{i}", stores[variant]) as server:
                    stats = run_locust(server.endpoints.inference, args.users, args.seconds,
                                       Path(tmp) / f"locust{rep}-{i}", ["PalindromeUser"], token=server.key())
                results[variant].append(stats["palindrome"])
                r = stats["palindrome"]
                print(f"[{rep + 1}/{args.repeats}] {variant}: {r.rps:.0f} req/s, p50 {r.p50_ms:.0f} ms, "
                      f"p99 {r.p99_ms:.0f} ms, {r.failures} failures", flush=True)
    print(f"\n{args.users} users, {args.seconds} s per run, medians of {args.repeats}:")
    print("| variant | req/s | p50 ms | p99 ms | failures |\n|---|---|---|---|---|")
    for variant, runs in results.items():
        med = lambda f: statistics.median(getattr(r, f) for r in runs)  # noqa: E731
        print(f"| {variant} | {med('rps'):.0f} | {med('p50_ms'):.0f} | {med('p99_ms'):.0f} | {sum(r.failures for r in runs)} |")


if __name__ == "__main__":
    main()
