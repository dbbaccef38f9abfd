"""Replicas behind the door under load: 1 vs 2 replicas side by side, and one replica killed and restarted.

    python -m benchmarks.replicas [--clients 32] [--seconds 60] [--kill-at 20] [--port 8090 --grpc-port 7090]
                                  [--runs 2 2-kill 1]   (repeat a run for medians: --runs 2 1 2 1 2 1)

Runs `make up`'s compose deployment three times: 2 replicas, 2 replicas with replica-1 killed (`docker
kill`, SIGKILL to every process in it) at --kill-at seconds and started again at once, then 1 replica
(in that order: going from 2 replicas to 1 loads no model).
Each run: --clients threads, each on its own keep-alive connection from its own loopback address
(127.0.0.10, .11, ...: the door limits each client address, and 32 clients are 32 addresses), POST
fresh palindromes of every length the LSTM serves (its checkpoint's range) to /predictions/palindrome through the
door for --seconds, and check each answer against the truth (the missing digit is the first one).
Every request that does not come back 200 with the right digit is counted, by kind. Bounded: every
run stops by itself.
Writes runs/replicas/<time>.json and prints the table for docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deploy import compose, image
from digitlab.checkpoint import read_checkpoint
from digitlab.workload import palindrome_prefix
from ops import door as ops_door
from ops.ready import is_ready, ready_url

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "replicas"
SERVED_LSTM = ROOT / "weights" / "palindrome_lstm.pt"  # its meta holds the range the door's replicas serve
REQUEST_TIMEOUT_S = 30.0
FIRST_CLIENT_ADDRESS = 10  # client i connects from 127.0.0.(10 + i)
KILLED = 1  # the replica the kill run kills
RUNS = {"2": (2, False), "2-kill": (2, True), "1": (1, False)}  # in this order: 2 -> 1 loads no model


@dataclass
class Tally:
    """What the clients saw: successes with their end times and latencies, failures by kind."""

    ok_at: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    failed_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, at: float, latency_ms: float) -> None:
        with self.lock:
            self.ok_at.append(at)
            self.latency_ms.append(latency_ms)

    def fail(self, at: float, kind: str) -> None:
        with self.lock:
            self.failures[kind] += 1
            self.failed_at.append(at)


def client(host: str, port: int, key: str, t0: float, until: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    meta = read_checkpoint(SERVED_LSTM)["meta"]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    source = (f"127.0.0.{FIRST_CLIENT_ADDRESS + seed}", 0)
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S, source_address=source)
    while time.monotonic() < until:
        digits, truth = palindrome_prefix(rng, meta["min_length"], meta["max_length"])
        began = time.monotonic()
        try:
            conn.request("POST", "/predictions/palindrome", json.dumps({"digits": digits}), headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as err:
            tally.fail(time.monotonic() - t0, f"connection: {type(err).__name__}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S, source_address=source)
            continue
        now = time.monotonic()
        if resp.status != 200:
            tally.fail(now - t0, f"HTTP {resp.status}")
        elif json.loads(body)["digit"] != truth:
            tally.fail(now - t0, "wrong answer")
        else:
            tally.ok(now - t0, (now - began) * 1000)
    conn.close()


def kill_and_restart(at: float, t0: float, props: dict[str, str], events: dict[str, float]) -> None:
    """At `at` s: SIGKILL replica-KILLED's container, start it again, note when it is ready again."""
    container = compose.container_id(f"replica-{KILLED}")
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    events["killed_s"] = time.monotonic() - t0
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    events["restarted_s"] = time.monotonic() - t0
    deadline = time.monotonic() + compose.READY_TIMEOUT_S
    while not is_ready(ready_url(props)):
        if time.monotonic() > deadline:
            return  # never ready again within the bound: no ready_again_s
        time.sleep(0.1)
    events["ready_again_s"] = time.monotonic() - t0


def per_second(times: list[float], seconds: int) -> list[int]:
    counts = [0] * seconds
    for t in times:
        if int(t) < seconds:
            counts[int(t)] += 1
    return counts


def run(replicas: int, args: argparse.Namespace, key: str, kill: bool) -> dict:
    compose.up(replicas, args.key_file, args.host, args.port, args.grpc_port)
    tally, events = Tally(), {}
    t0 = time.monotonic()
    until = t0 + args.seconds
    threads = [
        threading.Thread(target=client, args=(args.host, args.port, key, t0, until, seed, tally))
        for seed in range(args.clients)
    ]
    if kill:
        killed = compose.replica_props(KILLED, image.image_config())
        threads.append(threading.Thread(target=kill_and_restart, args=(args.kill_at, t0, killed, events)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = per_second(tally.ok_at, args.seconds)
    latency = sorted(tally.latency_ms)
    result = {
        "replicas": replicas,
        "kill": kill,
        "clients": args.clients,
        "seconds": args.seconds,
        "answered": len(tally.ok_at),
        "failed": sum(tally.failures.values()),
        "failures": dict(tally.failures),
        "req_per_s": len(tally.ok_at) / args.seconds,
        "median_req_per_s_of_1s_windows": statistics.median(rates),
        "p50_ms": latency[len(latency) // 2] if latency else None,
        "p99_ms": latency[int(len(latency) * 0.99)] if latency else None,
        "per_second": rates,
        **events,
    }
    if kill:
        after = [t for t in tally.failed_at if t >= events["killed_s"]]
        result["last_failure_after_kill_s"] = max(after) - events["killed_s"] if after else 0.0
        back = events.get("ready_again_s")
        result["replica_ready_after_kill_s"] = back - events["killed_s"] if back is not None else None
    return result


def each(runs: list[dict], key: str, fmt: str = "{:.0f}") -> str:
    return "[" + ", ".join(fmt.format(r[key]) for r in runs) + "]"


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def table(results: list[dict]) -> str:
    """One row per configuration: medians over its runs (each run's value in brackets)."""
    rows = [
        "| run | runs | req/s, median [each] | p50 / p99 ms, median | failed [each] | wrong answers |",
        "|---|---:|---|---|---|---:|",
    ]
    for replicas, kill in sorted({(r["replicas"], r["kill"]) for r in results}, key=lambda c: (c[1], c[0])):
        runs = [r for r in results if (r["replicas"], r["kill"]) == (replicas, kill)]
        name = f"{replicas} replica{'s' if replicas > 1 else ''}"
        if kill:
            killed_at = "/".join(sorted({f"{r['killed_s']:.0f}" for r in runs}))
            name += f", replica-{KILLED} killed at {killed_at} s"
        rows.append(
            f"| {name} | {len(runs)} | {median(runs, 'req_per_s'):.0f} {each(runs, 'req_per_s')} "
            f"| {median(runs, 'p50_ms'):.0f} / {median(runs, 'p99_ms'):.0f} | {each(runs, 'failed', '{}')} "
            f"| {sum(r['failures'].get('wrong answer', 0) for r in runs)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--kill-at", type=float, default=20.0)
    p.add_argument("--host", default=ops_door.DEFAULT_HOST)
    p.add_argument("--port", type=int, default=ops_door.DEFAULT_PORT, help="the door's REST port")
    p.add_argument("--grpc-port", type=int, default=ops_door.DEFAULT_GRPC_PORT, help="the door's gRPC port")
    p.add_argument("--key-file", type=Path, default=ops_door.RUNTIME / ops_door.CLIENT_KEY_FILE)
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which runs, in this order")
    p.add_argument("--keep", action="store_true", help="leave the last deployment up (default: make down)")
    args = p.parse_args(argv)
    image.ensure_docker()
    ops_door.ensure_client_key(args.key_file)
    key = ops_door.client_key(args.key_file)
    results = []
    try:
        for replicas, kill in (RUNS[r] for r in args.runs):
            results.append(run(replicas, args, key, kill))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "per_second"}), flush=True)
    finally:
        if not args.keep:
            compose.compose("down")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    for kill in (r for r in results if r["kill"]):
        back = kill["replica_ready_after_kill_s"]
        print(
            f"kill run: replica-{KILLED} killed at {kill['killed_s']:.1f} s, ready again "
            + (f"{back:.1f} s later" if back is not None else f"not within {compose.READY_TIMEOUT_S:.0f} s")
            + f"; last failed request {kill['last_failure_after_kill_s']:.1f} s after the kill"
        )
    print(f"results in {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
