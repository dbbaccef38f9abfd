"""Apache Bench (`ab -k`), the load of the studies that drive one URL hard: a C client, where a Python one
caps out below the server on 2 cores.

Its p99 is ab's own: the time within which 99 % of the requests were served, whole milliseconds, an observed
value at a rank (as `benchmarks.shared.stats.percentile` computes ours).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ops import server as ops_server

BODY = json.dumps({"digits": [1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2]})  # T = 15, answer 1
AB_HINT = "ab not found: apt-get install apache2-utils (make bench-peers installs it where it can)"


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Result:
    rps: float
    p99_ms: float
    failed: int


def ab_command(target: Target, seconds: float, clients: int, body: Path) -> list[str]:
    """`ab -k` posting the JSON file `body` to `target` for `seconds` over `clients` keep-alive connections."""
    headers = [arg for name, value in target.headers.items() for arg in ("-H", f"{name}: {value}")]
    # -t before -n: -t alone caps a run at 50,000 requests, which this server passes in 10 s. -r: a reset
    # connection is a failed request, not the end of the run (ab stops there otherwise, without its table).
    cmd = ["ab", "-k", "-q", "-r", "-c", str(clients), "-t", str(seconds), "-n", "10000000", "-s", "30"]
    return cmd + ["-p", str(body), "-T", "application/json", *headers, target.url]


def requests_per_second(ab_output: str) -> float:
    return float(re.search(r"Requests per second:\s+([\d.]+)", ab_output)[1])


def ab(target: Target, seconds: float, clients: int, payload: str = BODY) -> Result:
    """One `ab -k` run of `seconds` posting `payload` to `target` over `clients` concurrent keep-alive connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as body:
        body.write(payload)
        body.flush()
        cmd = ab_command(target, seconds, clients, Path(body.name))
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    p99 = float(re.search(r"^\s+99%\s+(\d+)", out, re.M)[1])
    failed = int(re.search(r"Failed requests:\s+(\d+)", out)[1]) + int(
        (re.search(r"Non-2xx responses:\s+(\d+)", out) or [0, 0])[1]
    )
    return Result(requests_per_second(out), p99, failed)


def start_load(
    server: ops_server.RunningServer, model: str, seconds: float, clients: int, folder: Path
) -> subprocess.Popen:
    """`ab -k` posting BODY to `model` of `server` in the background (its output on stdout): a load to profile under."""
    body = folder / "body.json"
    body.write_text(BODY)
    target = Target(f"{server.endpoints.inference}/predictions/{model}", {"Authorization": f"Bearer {server.key()}"})
    return subprocess.Popen(ab_command(target, seconds, clients, body), stdout=subprocess.PIPE, text=True)
