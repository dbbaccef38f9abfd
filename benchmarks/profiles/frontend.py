"""Where a palindrome request's time goes in TorchServe's frontend (the JVM): JFR under `ab` load.

    python -m benchmarks.profiles.frontend [--seconds 10] [--clients 32]

Serves the shipped `palindrome` archive in a TorchServe of its own, drives it with `ab -k`, and records a
Java Flight Recorder profile of the frontend meanwhile (`jcmd <pid> JFR.start`, JDK tools: the JRE alone
lacks them). Execution samples are grouped by the package of their top frame; the JVM's CPU time per
answered request is split by those shares. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks.shared.ab import requests_per_second, start_load
from benchmarks.shared.pages import markdown_table
from digitlab import catalog
from ops import server as ops_server
from tools.build_archives import build

# (group, package prefixes of the top frame), first match wins
GROUPS = [
    ("netty: sockets, HTTP codec, event loops", ("io.netty.",)),
    ("TorchServe: inference API, batching, worker protocol", ("org.pytorch.serve.",)),
    ("JSON and strings (Gson, java.lang)", ("com.google.gson.", "java.lang.String", "java.lang.StringBuilder")),
    ("logging (log4j)", ("org.apache.logging.",)),
    ("JDK: I/O, NIO, concurrency", ("sun.nio.", "java.nio.", "java.util.concurrent.", "jdk.internal.")),
    ("JDK, other", ("java.", "sun.", "jdk.")),
    ("other", ("",)),
]


def group_of(frame: str) -> str:
    return next(name for name, prefixes in GROUPS if frame.startswith(prefixes))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    if not (shutil.which("jcmd") and shutil.which("jfr")):
        raise SystemExit("jcmd and jfr not found: they come with the JDK (Debian: openjdk-17-jdk-headless)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        build("palindrome", catalog.model("palindrome"), store)
        with ops_server.serving(Path(tmp) / "ts", store) as server:
            launcher = int((server.workdir / ops_server.TORCHSERVE_PID_FILE).read_text())
            [jvm] = [c for c in psutil.Process(launcher).children() if c.name() == "java"]
            load = start_load(server, "palindrome", args.seconds + 4, args.clients, Path(tmp))  # outlasts the recording
            time.sleep(1.5)
            recording = Path(tmp) / "frontend.jfr"
            cpu0, t0 = sum(jvm.cpu_times()[:2]), time.monotonic()
            start = ["jcmd", str(jvm.pid), "JFR.start", "settings=profile", f"duration={int(args.seconds)}s"]
            subprocess.run([*start, f"filename={recording}"], capture_output=True, check=True)
            time.sleep(args.seconds + 1)
            cpu_s, wall_s = sum(jvm.cpu_times()[:2]) - cpu0, time.monotonic() - t0
            out = load.communicate()[0]
            rps = requests_per_second(out)
            printed = subprocess.run(
                ["jfr", "print", "--events", "jdk.ExecutionSample", str(recording)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    # Each sample prints its stack, top frame first: the first "line:" entry after "stackTrace = [".
    tops = re.findall(r"stackTrace = \[\s*\n\s*([\w.$]+)\.[\w$<>]+\(", printed)
    shares = Counter(group_of(frame) for frame in tops)
    per_request_us = cpu_s / (rps * wall_s) * 1e6
    print(f"frontend: {rps:,.0f} req/s, JVM CPU {cpu_s / wall_s:.2f} cores, {per_request_us:.0f} µs per request")
    result = {name: per_request_us * shares[name] / len(tops) for name, _ in GROUPS if shares[name]}
    cells = [[name, f"{100 * shares[name] / len(tops):.1f} %", f"{us:.1f}"] for name, us in result.items()]
    print(markdown_table(["top frame in", "share of samples", "µs per request"], cells, "lrr"))
    return result


if __name__ == "__main__":
    main()
