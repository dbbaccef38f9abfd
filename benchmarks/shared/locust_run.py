"""Run a bounded, headless locust against a server and read back its numbers.

Its percentiles are locust's own (its CSV's 50% / 95% / 99%: an observed response time at a rank, as
`benchmarks.shared.stats.percentile` computes ours, over times it rounds to two significant digits above 100 ms).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"  # run as a program: nothing here imports loadtests/


@dataclass(frozen=True)
class LoadResult:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def run_locust(
    host: str,
    users: int,
    seconds: int,
    out_prefix: Path,
    user_classes: list[str],
    token: str | None = None,
    spawn_rate: int | None = None,
    html: bool = False,
    extra_args: tuple[str, ...] = (),
) -> dict[str, LoadResult]:
    """Run locust headless for `seconds`; returns the per-endpoint rows (and "Aggregated") of its CSV.

    `extra_args` go to locust as they are: the locustfile's own options (--sample-n, --grpc-target) or --tags.
    """
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(spawn_rate or users),
        "-t",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(out_prefix),
        *extra_args,
        *user_classes,
    ]
    if html:
        cmd += ["--html", f"{out_prefix}.html"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"TORCHSERVE_TOKEN": token} if token else {})}
    # locust exits 1 when any request failed; the failures are in the numbers we return.
    subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60)
    return read_stats(Path(f"{out_prefix}_stats.csv"))


def latency_cell(cell: str) -> float:
    """Locust writes N/A for an entry with no completed request (e.g. a stream still running at the end)."""
    return float("nan") if cell == "N/A" else float(cell)


def read_stats(path: Path) -> dict[str, LoadResult]:
    rows = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            name = row["Name"]
            rows[name] = LoadResult(
                name=name,
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50_ms=latency_cell(row["50%"]),
                p95_ms=latency_cell(row["95%"]),
                p99_ms=latency_cell(row["99%"]),
            )
    return rows
