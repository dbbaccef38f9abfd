"""The door's cost and its protection, measured side by side against the same TorchServe.

    make serve
    python -m benchmarks.door.overhead [--seconds 15] [--repeats 3] [--users 32] [--flood-seconds 15]
                                          [--parts overhead flood]

1. Overhead: the same locust palindrome load (PalindromeUser, --users users, one locust process)
   against TorchServe directly and through a door, alternating direct / door, medians of --repeats:
   req/s, p50, p99. All locust users share one source address, so this door runs with its per-client
   limits lifted: it measures the proxy, not the policy.
2. Flood: client B (127.0.0.3) asks palindromes one after another while client A (127.0.0.2) floods
   64-step interpolations from FLOOD_THREADS threads: B's p50 / p99 and A's admitted / refused counts,
   with no flood, through a door with the shipped limits, and straight to TorchServe.

Runs against `make serve`'s TorchServe (keys in .ts/); starts its own doors on free ports and stops them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from benchmarks.shared.locust_run import run_locust
from benchmarks.shared.pages import markdown_table
from benchmarks.shared.stats import percentile
from ops import door as ops_door
from ops import server as ops_server

CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"  # all of 127/8 is loopback on Linux: two distinct clients
FLOOD_THREADS = 8  # twice the door's heavy in-flight cap: the flooder always has calls waiting
FLOOD_STEPS = 64  # the largest interpolation a request may ask for
RETRY_PAUSE_S = 0.1  # a flooding thread's pause after a refusal (no pause: the test client burns the CPU)
REQUEST_TIMEOUT_S = 60.0
PALINDROME = {"digits": [1, 2, 3, 4, 5, 4, 3, 2]}  # answer: 1
UNLIMITED = ops_door.Limits(
    rate=100_000,
    burst=100_000,
    heavy_rate=100_000,
    heavy_burst=100_000,
    in_flight=10_000,
    heavy_in_flight=10_000,
    grpc_in_flight=10_000,
)


class SourceAddressAdapter(HTTPAdapter):
    """Connections bound to one local address: a distinct client as the door sees it."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def client_session(address: str, key: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(address))
    session.headers.update({"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return session


def post(session: requests.Session, url: str, model: str, payload: dict) -> requests.Response:
    return session.post(f"{url}/predictions/{model}", data=json.dumps(payload), timeout=REQUEST_TIMEOUT_S)


@dataclass
class FloodResult:
    """What each client got: B's latencies (s) and answers, A's status codes."""

    b_latencies: list[float] = field(default_factory=list)
    b_problems: list[str] = field(default_factory=list)  # anything but a 200 with the right digit
    a_statuses: Counter = field(default_factory=Counter)

    def b_percentile_ms(self, p: float) -> float:
        """B's `p`-th percentile latency (0 <= p <= 100), ms."""
        return 1000 * percentile(self.b_latencies, p)


def flood_interpolations(url: str, key: str, stop: threading.Event, result: FloodResult) -> None:
    """One of client A's threads: 64-step interpolations until `stop`; pauses briefly after a refusal."""
    session = client_session(CLIENT_A, key)
    payload = {"start": {"seed": 5, "index": 0}, "end": {"seed": 5, "index": 1}, "steps": FLOOD_STEPS}
    while not stop.is_set():
        status = post(session, url, "interpolate", payload).status_code
        result.a_statuses[status] += 1
        if status != 200:
            time.sleep(RETRY_PAUSE_S)


def palindromes(url: str, key: str, seconds: float, result: FloodResult) -> None:
    """Client B: palindromes one after another for `seconds`, each timed and checked."""
    session = client_session(CLIENT_B, key)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        resp = post(session, url, "palindrome", PALINDROME)
        result.b_latencies.append(time.perf_counter() - began)
        if resp.status_code != 200 or resp.json().get("digit") != 1:
            result.b_problems.append(f"HTTP {resp.status_code}: {resp.text[:200]}")


def flood(url: str, keys: tuple[str, str], seconds: float, flood_threads: int = FLOOD_THREADS) -> FloodResult:
    """B's palindromes for `seconds` while A floods interpolations from `flood_threads` threads (0: no flood).
    keys = (A's, B's): through the door, two clients are two keys (its limits count per key)."""
    result, stop = FloodResult(), threading.Event()
    flooders = [
        threading.Thread(target=flood_interpolations, args=(url, keys[0], stop, result), daemon=True)
        for _ in range(flood_threads)
    ]
    for t in flooders:
        t.start()
    try:
        palindromes(url, keys[1], seconds, result)
    finally:
        stop.set()
        for t in flooders:
            t.join(REQUEST_TIMEOUT_S)
    return result


# -- the measurement -------------------------------------------------------------------------------


def door_for(props: dict[str, str], limits: ops_door.Limits, key_file: Path) -> ops_door.Door:
    """A door on free ports in front of `make serve`'s TorchServe."""
    port, grpc_port = ops_server.free_ports(2)
    return ops_door.Door(
        host="127.0.0.1",
        port=port,
        grpc_port=grpc_port,
        replicas=[ops_door.replica(ops_server.endpoints(props))],
        models=ops_server.archives(),
        torchserve_key_file=str(ops_server.ROOT / ".ts" / "key_file.json"),
        client_key_file=str(key_file),
        max_body_bytes=int(props["max_request_size"]),
        limits=limits,
    )


def overhead(
    direct: str, direct_key: str, door: str, door_key: str, users: int, seconds: int, repeats: int, out: Path
) -> dict[str, list]:
    """Alternate direct / door runs of the same locust palindrome load; -> {"direct": [...], "door": [...]}."""
    runs = {"direct": [], "door": []}
    for i in range(repeats):
        for name, host, key in (("direct", direct, direct_key), ("door", door, door_key)):
            stats = run_locust(host, users, seconds, out / f"{name}-{i}", ["PalindromeUser"], token=key)
            if "palindrome" not in stats:
                raise SystemExit(f"locust completed no request against {host} in {seconds} s: see {out}")
            row = stats["palindrome"]
            runs[name].append(row)
            print(
                f"  {name:6s} run {i + 1}: {row.rps:7.1f} req/s  p50 {row.p50_ms:5.0f} ms  p99 {row.p99_ms:5.0f} ms"
                f"  failures {row.failures}"
            )
    return runs


def median(values) -> float:
    return statistics.median(values)


def print_overhead(runs: dict[str, list]) -> None:
    metrics = ("rps", "p50_ms", "p99_ms")
    cells = [
        [
            name,
            *(f"{median(getattr(r, m) for r in runs[name]):.0f}" for m in metrics),
            sum(r.failures for r in runs[name]),
        ]
        for name in ("direct", "door")
    ]
    d, g = runs["direct"], runs["door"]
    ratios = (median(getattr(r, m) for r in g) / median(getattr(r, m) for r in d) for m in metrics)
    cells.append(["door / direct", *(f"{x:.2f}" for x in ratios), ""])
    print("\n" + markdown_table(["target", "palindrome req/s", "p50 ms", "p99 ms", "failures"], cells, "lrrrr"))


def print_flood(results: dict[str, FloodResult]) -> None:
    header = ["client B's palindromes", "answers", "p50 ms", "p99 ms", "B's failures"]
    cells = [
        [
            name,
            len(r.b_latencies),
            f"{r.b_percentile_ms(50):.0f}",
            f"{r.b_percentile_ms(99):.0f}",
            len(r.b_problems),
            f"{r.a_statuses.get(200, 0)} / {sum(n for s, n in r.a_statuses.items() if s != 200)}",
        ]
        for name, r in results.items()
    ]
    print("\n" + markdown_table([*header, "A's interpolations: 200 / refused"], cells, "lrrrrl"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=15, help="per locust run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--flood-seconds", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=ops_server.ROOT / "runs" / "door")
    p.add_argument("--parts", nargs="+", choices=["overhead", "flood"], default=["overhead", "flood"])
    args = p.parse_args(argv)
    props = ops_server.read_properties(ops_server.ROOT / "config.properties")
    endpoints = ops_server.endpoints(props)
    direct_key = ops_server.read_keys(ops_server.ROOT / ".ts")["inference"]
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "api_keys"
        # Two clients, A and B, each with a key of its own: the door's limits count per key.
        key_file.write_text("".join(f"client-{c} {secrets.token_urlsafe(32)}\n" for c in "ab"))
        key_file.chmod(0o600)
        keys = tuple(line.split()[1] for line in key_file.read_text().splitlines())
        door_key = keys[1]
        open_door = door_for(props, UNLIMITED, key_file)
        shipped = door_for(props, ops_door.LIMITS, key_file)
        ops_door.start(Path(tmp) / "open", open_door)
        ops_door.start(Path(tmp) / "shipped", shipped)
        try:
            if "overhead" in args.parts:
                print(f"overhead: {args.users} locust users, {args.seconds} s per run, direct/door alternating")
                print_overhead(
                    overhead(
                        endpoints.inference,
                        direct_key,
                        f"http://127.0.0.1:{open_door.port}",
                        door_key,
                        args.users,
                        args.seconds,
                        args.repeats,
                        args.out,
                    )
                )
            if "flood" in args.parts:
                print(
                    f"\nflood: B one palindrome after another for {args.flood_seconds:.0f} s, A {FLOOD_THREADS} "
                    f"threads of {FLOOD_STEPS}-step interpolations"
                )
                shipped_url = f"http://127.0.0.1:{shipped.port}"
                print_flood(
                    {
                        "no flood, straight to TorchServe": flood(
                            endpoints.inference, (direct_key, direct_key), args.flood_seconds, 0
                        ),
                        "no flood, through the door": flood(shipped_url, keys, args.flood_seconds, 0),
                        "flood, through the door (shipped limits)": flood(shipped_url, keys, args.flood_seconds),
                        "flood, straight to TorchServe": flood(
                            endpoints.inference, (direct_key, direct_key), args.flood_seconds
                        ),
                    }
                )
        finally:
            ops_door.stop(Path(tmp) / "open")
            ops_door.stop(Path(tmp) / "shipped")


if __name__ == "__main__":
    main()
