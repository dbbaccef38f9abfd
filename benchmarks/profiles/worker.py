"""Where a palindrome request's time goes in the TorchServe worker: py-spy under `ab` load, grouped by step.

    python -m benchmarks.profiles.worker [--seconds 10] [--clients 32] [--model palindrome|noop]

Serves the shipped `palindrome` archive (or the no-op handler) in a TorchServe of its own, drives it with
`ab -k` for `--seconds`, and samples the worker process with py-spy (the peers extra: `make bench-peers`
installs it) meanwhile. Every sample is put in the first step (top of the table first) whose function is
on its stack; the worker's CPU time per answered request is split by those shares. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks.shared.ab import requests_per_second, start_load
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.servers import REFERENCE, noop_archive
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import build

# (step, functions that mark it), most specific first: a sample belongs to the first step found on its stack.
STEPS = [
    ("metric line (TorchServe's PredictionTime, written to stdout)", ("CachingMetric.emit_metrics",)),
    ("JSON decode and validation (digitlab.schemas)", ("ServingHandler.decode_batch",)),
    ("tensor building (pad_batch)", ("pad_batch",)),
    ("forward (LSTM + head + softmax)", ("predict_probabilities",)),
    ("answers (numbers to Python, response objects)", ("PalindromeService.answer",)),
    ("encode JSON and set headers (handler)", ("ServingHandler.send", "ServingHandler.mark_final", "request_headers")),
    ("no-op handler (parse, fixed answer)", ("NoopHandler.handle",)),
    ("worker protocol: read a batch", ("retrieve_msg",)),
    ("worker protocol: write the answers", ("create_predict_response", "send_intermediate_predict_response")),
    ("TorchServe's worker loop, other", ("",)),
]


def step_of(stack: str) -> str:
    for step, marks in STEPS:
        if any(mark in stack for mark in marks):
            return step
    return STEPS[-1][0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--model", default="palindrome", choices=["palindrome", REFERENCE])
    args = p.parse_args(argv)
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy not found: make bench-peers installs it (the peers extra)")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build("palindrome", catalog.model("palindrome"), store)
        noop_archive(store)
        with ops_server.serving(Path(tmp) / "ts", store) as server:
            [pid] = server.worker_pids(args.model)
            load = start_load(server, args.model, args.seconds + 3, args.clients, Path(tmp))  # outlasts the recording
            time.sleep(1.5)  # past ab's start
            worker = psutil.Process(pid)
            cpu0, t0 = sum(worker.cpu_times()[:2]), time.monotonic()
            raw = Path(tmp) / "profile.txt"
            spy_cmd = [spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "250"]
            spy_cmd += ["--format", "raw", "-o", str(raw), "--nonblocking"]
            subprocess.run(spy_cmd, capture_output=True, check=True)
            cpu_s, wall_s = sum(worker.cpu_times()[:2]) - cpu0, time.monotonic() - t0
            out = load.communicate()[0]
            rps = requests_per_second(out)
            shares: Counter[str] = Counter()
            for line in raw.read_text().splitlines():
                stack, count = line.rsplit(" ", 1)
                shares[step_of(stack)] += int(count)
    total = sum(shares.values())
    per_request_us = cpu_s / (rps * wall_s) * 1e6
    print(f"{args.model}: {rps:,.0f} req/s, worker CPU {cpu_s / wall_s:.2f} cores, {per_request_us:.0f} µs per request")
    result = {step: per_request_us * shares[step] / total for step, _ in STEPS if shares[step]}
    cells = [[step, f"{100 * shares[step] / total:.1f} %", f"{us:.1f}"] for step, us in result.items()]
    print(markdown_table(["step", "share of the worker's samples", "µs per request"], cells, "lrr"))
    return result


if __name__ == "__main__":
    main()
