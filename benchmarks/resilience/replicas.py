"""Replicas behind the door under load: a replica killed and restarted, a rolling update, 1 vs 2 replicas.

    python -m benchmarks.resilience.replicas [--clients 32] [--seconds 60] [--kill-at 20] [--image digitlab:v2]
                                  [--runs 2-kill rollout]   (also 2 and 1; repeat a run for medians: --runs 2 1 2 1)

Each run starts `make up`'s compose deployment (replicas on a bridge network, the door following the ready
ones) and puts --clients threads on it, each a `requests` session (keep-alive, no retries), POSTing fresh palindromes
of every length the LSTM serves (its checkpoint's range) to /predictions/palindrome through the door and
checking each answer against the truth (the missing digit is the first one). Every request that does not
come back 200 with the right digit is counted, by kind. The door's per-client limits are off
(DIGITLAB_LIMITS=off): behind Docker's userland proxy every client arrives from one address.

  2, 1      that many replicas for --seconds.
  2-kill    2 replicas; at --kill-at s one is killed (`docker kill`: SIGKILL to every process in it) and
            started again RESTART_AFTER_S later; the run lasts --seconds.
  rollout   2 replicas of the running image; at --kill-at s `make rollout` replaces them one by one with
            --image (built with another model version); the run lasts until the rollout is done and
            AFTER_ROLLOUT_S more, and records which model version (X-Model-Version) answered when.

Bounded: every run stops by itself. Writes runs/replicas/<time>.json and prints the table for docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from benchmarks.shared.pages import markdown_table
from benchmarks.shared.stats import percentiles
from deploy import compose, image
from digitlab.checkpoint import read_checkpoint
from digitlab.workload import palindrome_prefix
from ops import door as ops_door

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "runs" / "replicas"
SERVED_LSTM = ROOT / "weights" / "palindrome_lstm.pt"  # its meta holds the range the door's replicas serve
REQUEST_TIMEOUT_S = 30.0
RESTART_AFTER_S = 5.0  # the killed replica is started again this long after the kill
AFTER_ROLLOUT_S = 10.0  # load goes on this long after the rollout finished
ROLLOUT_MAX_S = 900.0  # a rollout run stops here even if the rollout has not finished
RUNS = {"2": (2, None), "1": (1, None), "2-kill": (2, "kill"), "rollout": (2, "rollout")}


@dataclass
class Tally:
    """What the clients saw: successes with their end times, latencies and model versions; failures by kind."""

    ok_at: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    versions: list[tuple[float, str]] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    failed_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, at: float, latency_ms: float, version: str) -> None:
        with self.lock:
            self.ok_at.append(at)
            self.latency_ms.append(latency_ms)
            self.versions.append((at, version))

    def fail(self, at: float, kind: str) -> None:
        with self.lock:
            self.failures[kind] += 1
            self.failed_at.append(at)


def client(url: str, key: str, t0: float, stop: threading.Event, seed: int, tally: Tally) -> None:
    """One user: a requests session (what the SDK uses) without retries, so every failure is counted."""
    rng = random.Random(seed)
    meta = read_checkpoint(SERVED_LSTM)["meta"]
    headers = {"Authorization": f"Bearer {key}"}
    with requests.Session() as session:
        while not stop.is_set():
            digits, truth = palindrome_prefix(rng, meta["min_length"], meta["max_length"])
            began = time.monotonic()
            try:
                resp = session.post(url, json={"digits": digits}, headers=headers, timeout=REQUEST_TIMEOUT_S)
            except requests.RequestException as err:
                tally.fail(time.monotonic() - t0, f"connection: {type(err).__name__}")
                continue
            now = time.monotonic()
            if resp.status_code != 200:
                tally.fail(now - t0, f"HTTP {resp.status_code}")
            elif resp.json()["digit"] != truth:
                tally.fail(now - t0, "wrong answer")
            else:
                tally.ok(now - t0, (now - began) * 1000, resp.headers.get("X-Model-Version", "?"))


def kill_and_restart(at: float, t0: float, events: dict) -> None:
    """At `at` s: SIGKILL the first replica's container, start it again RESTART_AFTER_S later, note when the
    door follows it as ready again."""
    container = compose.replica_containers()[0]
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    events["killed_s"] = time.monotonic() - t0
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    time.sleep(RESTART_AFTER_S)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    events["restarted_s"] = time.monotonic() - t0
    address, since = compose.address(container), time.time()
    deadline = time.monotonic() + compose.READY_TIMEOUT_S
    while address not in compose.followed(since)["ready"]:
        if time.monotonic() > deadline:
            return  # never ready again within the bound: no ready_again_s
        time.sleep(0.1)
    events["ready_again_s"] = time.monotonic() - t0


def roll_out(at: float, t0: float, image: str, events: dict) -> None:
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    events["rollout_began_s"] = time.monotonic() - t0
    events["rollout_steps"] = compose.rollout(image)
    events["rollout_done_s"] = time.monotonic() - t0


def per_second(times: list[float], seconds: int) -> list[int]:
    counts = [0] * seconds
    for t in times:
        if int(t) < seconds:
            counts[int(t)] += 1
    return counts


def version_switch(versions: list[tuple[float, str]]) -> dict:
    """Which model versions answered, how often, and when each was first and last seen."""
    seen: dict[str, dict] = {}
    for at, version in sorted(versions):
        entry = seen.setdefault(version, {"answers": 0, "first_s": at})
        entry["answers"] += 1
        entry["last_s"] = at
    return seen


def run(replicas: int, args: argparse.Namespace, key: str, event: str | None) -> dict:
    compose.up(replicas, args.key_file, compose.Up(args.host, args.port, args.grpc_port, image=args.base_image))
    tally, events, stop = Tally(), {}, threading.Event()
    url = f"http://{args.host}:{args.port}"
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(f"{url}/predictions/palindrome", key, t0, stop, seed, tally))
        for seed in range(args.clients)
    ]
    if event == "kill":
        chaos = threading.Thread(target=kill_and_restart, args=(args.kill_at, t0, events))
    elif event == "rollout":
        chaos = threading.Thread(target=roll_out, args=(args.kill_at, t0, args.image, events))
    else:
        chaos = None
    for t in [*threads, *([chaos] if chaos else [])]:
        t.start()
    if event == "rollout":
        chaos.join(timeout=ROLLOUT_MAX_S)
        time.sleep(AFTER_ROLLOUT_S)
    else:
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
    stop.set()
    for t in threads:
        t.join()
    seconds = int(time.monotonic() - t0)
    if chaos:
        chaos.join(timeout=compose.READY_TIMEOUT_S)
    rates = per_second(tally.ok_at, seconds)
    p50, p99 = percentiles(tally.latency_ms, [50, 99]) if tally.latency_ms else (None, None)
    result = {
        "replicas": replicas,
        "event": event,
        "clients": args.clients,
        "seconds": seconds,
        "answered": len(tally.ok_at),
        "failed": sum(tally.failures.values()),
        "failures": dict(tally.failures),
        "wrong": tally.failures.get("wrong answer", 0),
        "req_per_s": len(tally.ok_at) / seconds,
        "median_req_per_s_of_1s_windows": statistics.median(rates),
        "p50_ms": p50,
        "p99_ms": p99,
        "versions": version_switch(tally.versions),
        "per_second": rates,
        **events,
    }
    if event == "kill":
        back = events.get("ready_again_s")
        result["replica_ready_after_kill_s"] = back - events["killed_s"] if back is not None else None
    return result


def each(runs: list[dict], key: str, fmt: str = "{:.0f}") -> str:
    return "[" + ", ".join(fmt.format(r[key]) for r in runs) + "]"


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run_name(r: dict) -> str:
    name = f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''}"
    if r["event"] == "kill":
        name += f", one killed at {r['killed_s']:.0f} s, started again {RESTART_AFTER_S:.0f} s later"
    elif r["event"] == "rollout":
        name += f", rolled out to a new model version from {r['rollout_began_s']:.0f} s"
    return name


def table(results: list[dict]) -> str:
    """One row per configuration: medians over its runs (each run's value in brackets)."""
    cells = []
    for config in dict.fromkeys((r["replicas"], r["event"]) for r in results):
        runs = [r for r in results if (r["replicas"], r["event"]) == config]
        cells.append(
            [
                run_name(runs[0]),
                len(runs),
                each(runs, "answered", "{}"),
                f"{median(runs, 'req_per_s'):.0f} {each(runs, 'req_per_s')}",
                f"{median(runs, 'p50_ms'):.0f} / {median(runs, 'p99_ms'):.0f}",
                each(runs, "failed", "{}"),
                sum(r["wrong"] for r in runs),
            ]
        )
    header = ["run", "runs", "answered [each]", "req/s, median [each]", "p50 / p99 ms, median", "failed [each]"]
    return markdown_table([*header, "wrong"], cells, "lrllllr")


def describe(r: dict) -> str:
    """The events of a kill or rollout run, in words."""
    if r["event"] == "kill":
        back = r["replica_ready_after_kill_s"]
        return (
            f"kill run: killed at {r['killed_s']:.1f} s, started again at {r['restarted_s']:.1f} s, followed as "
            + (f"ready {back:.1f} s after the kill" if back is not None else "never ready again within the bound")
            + f"; {r['failed']} failed, {r['wrong']} wrong of {r['answered'] + r['failed']}"
        )
    if r["event"] == "rollout":
        steps = "; ".join(f"{s['old']} -> {s['new']} ready after {s['ready_s']:.0f} s" for s in r["rollout_steps"])
        versions = ", ".join(
            f"{v}: {e['answers']} answers, {e['first_s']:.1f}-{e['last_s']:.1f} s" for v, e in r["versions"].items()
        )
        return (
            f"rollout run: {r['rollout_began_s']:.0f}-{r['rollout_done_s']:.0f} s ({steps}); versions: {versions}; "
            f"{r['failed']} failed, {r['wrong']} wrong"
        )
    return ""


def prepare(key_file: Path) -> str:
    """Docker running, the client key made where missing (-> it), and the door's per-client limits off: behind
    Docker's userland proxy every client is one address, and the limits would refuse the load."""
    image.ensure_docker()
    ops_door.ensure_client_key(key_file)
    os.environ[ops_door.LIMITS_SWITCH_ENV] = "off"
    return ops_door.client_key(key_file)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=int, default=60, help="length of a run (a rollout run: until it is done)")
    p.add_argument("--kill-at", type=float, default=20.0, help="when the kill or the rollout begins")
    p.add_argument("--host", default=ops_door.DEFAULT_HOST)
    p.add_argument("--port", type=int, default=ops_door.DEFAULT_PORT, help="the door's REST port")
    p.add_argument("--grpc-port", type=int, default=ops_door.DEFAULT_GRPC_PORT, help="the door's gRPC port")
    p.add_argument("--key-file", type=Path, default=ops_door.RUNTIME / ops_door.CLIENT_KEY_FILE)
    p.add_argument("--base-image", default=image.IMAGE, help="the image every run starts from")
    p.add_argument("--image", default="digitlab:v2", help="the image a rollout run rolls out")
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=["2-kill", "rollout"], help="in this order")
    p.add_argument("--keep", action="store_true", help="leave the last deployment up (default: make down)")
    args = p.parse_args(argv)
    key = prepare(args.key_file)
    results = []
    try:
        for replicas, event in (RUNS[r] for r in args.runs):
            results.append(run(replicas, args, key, event))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "per_second"}), flush=True)
    finally:
        if not args.keep:
            compose.compose("down")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    for r in results:
        if r["event"]:
            print(describe(r))
    print(f"results in {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
