"""Smoke runs of the locust scenarios and of the benchmark harness, so neither can rot unnoticed.

Seconds of load with a handful of users: they check that every scenario runs and that its content
checks pass against the real server, not how fast anything is (that is `make bench`).
"""

import csv
import subprocess
import sys

import pytest

from benchmarks.serving.report import LABELS
from benchmarks.shared.locust_run import run_locust
from digitlab.workload import FIRST_FRAME, GRPC_PALINDROME, LAST_FRAME
from tools.build_archives import ROOT

pytestmark = pytest.mark.server
USERS = ["PalindromeUser", "SampleUser", "InterpolateUser", "GrpcUser", "MixedUser", "PingUser"]
HANG_GUARD_S = 600  # only against a hung subprocess; nothing here asserts on time


def failures(prefix) -> list[str]:
    with open(f"{prefix}_failures.csv") as f:
        return [f"{row['Name']}: {row['Error']}" for row in csv.DictReader(f)]


def test_every_locust_user_runs_and_its_content_checks_pass(server, tmp_path):
    prefix = tmp_path / "locust"
    # One user per class; small samples and short interpolations keep a few seconds enough for every task.
    stats = run_locust(
        server.endpoints.inference,
        len(USERS),
        4,
        prefix,
        USERS,
        token=server.key(),
        extra_args=("--grpc-target", server.endpoints.grpc_inference, "--sample-n", "4", "--interpolate-steps", "4"),
    )
    assert stats["Aggregated"].failures == 0, failures(prefix)
    served = {name for name, row in stats.items() if row.requests}
    assert {"palindrome", "sample", "interpolate", "ping", GRPC_PALINDROME, FIRST_FRAME, LAST_FRAME} <= served


def test_benchmark_harness_smoke_writes_its_report(tmp_path):
    doc, chart, results = tmp_path / "BENCHMARKS.md", tmp_path / "bench.png", tmp_path / "results.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.serving.run",
            "--smoke",
            "--doc",
            str(doc),
            "--chart",
            str(chart),
            "--results",
            str(results),
        ],
        cwd=ROOT,
        timeout=HANG_GUARD_S,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = doc.read_text()
    for label in LABELS.values():  # every target measured palindrome without an error
        assert any(line.startswith(f"| {label} |") and line.endswith("| 0 |") for line in text.splitlines()), label
    assert chart.read_bytes().startswith(b"\x89PNG")
