"""Soak: minutes of mixed good and hostile traffic; failures, latency over time, worker memory and log growth.

    python -m benchmarks.resilience.soak                      # against `make serve` (.ts/), 10 minutes
    python -m benchmarks.resilience.soak --start --minutes 2  # against a private server on free ports

Each of --users threads loops over a mix of requests: palindromes over REST and gRPC (answers checked
against the truth), samples, streamed interpolations over gRPC, and --bad-fraction hostile bodies (each
must get a 4xx). A failure is anything else: a 5xx, a wrong answer, a refused good request, a transport
error. Every --every seconds it records the workers' resident memory and the size of the logs. Writes
<out>/soak.json (the numbers) and <out>/soak.png (latency percentiles, memory and logs over time).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import grpc
import requests
from matplotlib.figure import Figure
from tqdm import tqdm

from benchmarks.shared.stats import percentiles
from clients.ts_grpc import inference_pb2, inference_pb2_grpc
from digitlab import catalog
from ops import server as ops_server

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = [
    b"[" * 1000 + b"]" * 1000,
    b'{"digits": [' + b"9" * 5000 + b"]}",
    b'{"digits": "\xff"}',
    b"{",
    b'{"digits": [1, 2, 3, 4]}',
    b'{"n": 1000}',
    b'{"steps": 1, "start": {}, "end": {}}',
    b"null",
    b'{"digits": [1, 2, 1], "stream": "yes"}',
]
# The model named after each kind takes the hostile bodies (validation is the kind's, whichever model serves it).
HOSTILE_MODELS = [m.name for m in catalog.MODELS if m.name == m.kind]


class Soak:
    def __init__(self, server: ops_server.RunningServer, seed: int) -> None:
        self.server, self.rng_seed = server, seed
        self.records: list[tuple[float, str, float, bool]] = []  # (t, kind, ms, ok)
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def record(self, kind: str, began: float, ok: bool, why: str = "") -> None:
        with self.lock:
            self.records.append((time.monotonic(), kind, (time.perf_counter() - began) * 1000, ok))
            if not ok:
                self.failures.append(f"{kind}: {why}"[:300])

    def user(self, index: int, until: float, bad_fraction: float) -> None:
        rng = random.Random(self.rng_seed * 1000 + index)
        session = requests.Session()
        channel = grpc.insecure_channel(self.server.endpoints.grpc_inference)
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        url = self.server.endpoints.inference
        while time.monotonic() < until:
            key = self.server.key()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            metadata = [("authorization", f"Bearer {key}")]
            began, pick = time.perf_counter(), rng.random()
            try:
                if pick < bad_fraction:
                    body, model = rng.choice(HOSTILE), rng.choice(HOSTILE_MODELS)
                    code = session.post(
                        f"{url}/predictions/{model}", data=body, headers=headers, timeout=30
                    ).status_code
                    self.record("hostile", began, 400 <= code < 500, f"status {code}")
                    continue
                half = [rng.randrange(10) for _ in range(rng.randint(2, 7))]
                digits = [*half, *half[::-1]][:-1]  # the first T digits of a palindrome of T + 1
                if pick < 0.55:
                    answer = session.post(
                        f"{url}/predictions/palindrome", json={"digits": digits}, headers=headers, timeout=30
                    ).json()
                    self.record("palindrome REST", began, answer.get("digit") == digits[0], str(answer)[:200])
                elif pick < 0.75:
                    request = inference_pb2.PredictionsRequest(
                        model_name="palindrome", input={"data": json.dumps({"digits": digits}).encode()}
                    )
                    [reply] = stub.StreamPredictions(request, metadata=metadata, timeout=30)
                    answer = json.loads(reply.prediction)
                    self.record("palindrome gRPC", began, answer.get("digit") == digits[0], str(answer)[:200])
                elif pick < 0.9:
                    answer = session.post(
                        f"{url}/predictions/sample", json={"n": rng.randint(1, 16)}, headers=headers, timeout=30
                    ).json()
                    self.record("sample REST", began, "images" in answer, str(answer)[:200])
                else:
                    steps = rng.randint(4, 16)
                    body = {
                        "start": {"seed": rng.randrange(99), "index": 0},
                        "end": {"seed": rng.randrange(99), "index": 1},
                        "steps": steps,
                        "stream": True,
                    }
                    request = inference_pb2.PredictionsRequest(
                        model_name="interpolate", input={"data": json.dumps(body).encode()}
                    )
                    frames = [
                        json.loads(r.prediction) for r in stub.StreamPredictions(request, metadata=metadata, timeout=60)
                    ]
                    self.record(
                        "interpolate gRPC stream",
                        began,
                        [f.get("index") for f in frames] == list(range(steps)),
                        f"{len(frames)} frames of {steps}",
                    )
            except (requests.RequestException, grpc.RpcError, ValueError, KeyError) as err:
                self.record("transport", began, False, repr(err))
        channel.close()


def worker_rss_mib(server: ops_server.RunningServer) -> float:
    """Resident memory of every worker process, MiB."""
    total = 0
    for model in server.models:
        for pid in server.worker_pids(model):
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return total / 1024


def log_bytes(server: ops_server.RunningServer) -> int:
    return sum(p.stat().st_size for p in [*server.workdir.glob("logs/*"), server.workdir / "console.log"] if p.exists())


def run(server: ops_server.RunningServer, args: argparse.Namespace) -> dict:
    soak = Soak(server, args.seed)
    began = time.monotonic()
    until = began + args.minutes * 60
    threads = [
        threading.Thread(target=soak.user, args=(i, until, args.bad_fraction), daemon=True) for i in range(args.users)
    ]
    for t in threads:
        t.start()
    samples = []  # (s since start, worker RSS MiB, log bytes, requests so far)
    with tqdm(total=int(args.minutes * 60), unit="s", desc="soak") as bar:
        while time.monotonic() < until:
            samples.append((time.monotonic() - began, worker_rss_mib(server), log_bytes(server), len(soak.records)))
            time.sleep(args.every)
            bar.n = int(time.monotonic() - began)
            bar.set_postfix(requests=len(soak.records), failures=len(soak.failures))
    for t in threads:
        t.join()
    samples.append((time.monotonic() - began, worker_rss_mib(server), log_bytes(server), len(soak.records)))
    return summarise(soak, samples, began, args)


def summarise(soak: Soak, samples: list[tuple], began: float, args: argparse.Namespace) -> dict:
    minutes = []
    for m in range(int(args.minutes + 0.999)):
        ms = [r[2] for r in soak.records if m * 60 <= r[0] - began < (m + 1) * 60 and r[1] != "hostile"]
        if ms:
            p50, p95, p99 = percentiles(ms, [50, 95, 99])
            minutes.append(
                {
                    "minute": m + 1,
                    "requests": len(ms),
                    "p50_ms": round(p50, 1),
                    "p95_ms": round(p95, 1),
                    "p99_ms": round(p99, 1),
                }
            )
    kinds = sorted({r[1] for r in soak.records})
    # RSS growth: after the first minute (warm-up: allocator pools, caches) to the end.
    warm = next((s for s in samples if s[0] >= 60), samples[0])
    return {
        "minutes": args.minutes,
        "users": args.users,
        "bad_fraction": args.bad_fraction,
        "requests": len(soak.records),
        "failures": len(soak.failures),
        "failure_examples": soak.failures[:10],
        "by_kind": {k: sum(1 for r in soak.records if r[1] == k) for k in kinds},
        "per_minute": minutes,
        "worker_rss_mib": {
            "after_warmup": round(warm[1], 1),
            "end": round(samples[-1][1], 1),
            "growth_pct": round(100 * (samples[-1][1] - warm[1]) / warm[1], 2),
        },
        "log_bytes": {
            "start": samples[0][2],
            "end": samples[-1][2],
            "per_request": round((samples[-1][2] - samples[0][2]) / max(1, len(soak.records)), 1),
        },
        "samples": [[round(s[0], 1), round(s[1], 1), s[2], s[3]] for s in samples],
    }


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 3.6))
    lat, mem, logs = fig.subplots(1, 3)
    x = [m["minute"] for m in result["per_minute"]]
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        lat.plot(x, [m[q] for m in result["per_minute"]], marker="o", label=q.split("_")[0])
    lat.set(xlabel="minute", ylabel="ms (good requests)", title="latency per minute")
    lat.legend()
    t = [s[0] / 60 for s in result["samples"]]
    mem.plot(t, [s[1] for s in result["samples"]])
    mem.set(xlabel="minute", ylabel="MiB", title="workers' resident memory")
    logs.plot(t, [s[2] / 1e6 for s in result["samples"]])
    logs.set(xlabel="minute", ylabel="MB", title="logs on disk")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10, help="how long (default: 10)")
    p.add_argument("--users", type=int, default=8, help="concurrent client threads (default: 8)")
    p.add_argument("--bad-fraction", type=float, default=0.2, help="share of hostile requests (default: 0.2)")
    p.add_argument("--every", type=float, default=10, help="seconds between memory/log samples (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument(
        "--start", action="store_true", help="start a private server on free ports instead of using make serve's"
    )
    p.add_argument("--workdir", type=Path, default=ROOT / ".ts", help="make serve's working directory (default: .ts)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "soak", help="default: docs/soak")
    args = p.parse_args(argv)
    if args.start:
        with tempfile.TemporaryDirectory() as tmp, ops_server.serving(Path(tmp)) as server:
            result = run(server, args)
    else:
        props = ops_server.read_properties(args.workdir / "config.properties")
        server = ops_server.RunningServer(args.workdir, ops_server.endpoints(props), ops_server.archives(), 0, 0.0)
        result = run(server, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "soak.png")
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "per_minute")}, indent=1))
    return result


if __name__ == "__main__":
    main()
