"""Target (a) of `make bench`: the serving layer called in this process, batched as a worker batches: the compute limit.

Each request costs here what it costs a handler (parse the JSON body, its share of one `answer` per
batch, encode the JSON answer) and nothing else: no HTTP, no queue, no frontend-worker hop. The
requests are drawn by digitlab.workload, as the locust users draw theirs; batches take the shipped
batchSize; latency is the time of the batch a request is in.
"""

from __future__ import annotations

import json
import random
import time

import torch

from benchmarks.shared.locust_run import LoadResult
from benchmarks.shared.shipped import service
from benchmarks.shared.stats import percentiles
from digitlab import catalog, workload
from digitlab.workload import FIRST_FRAME, LAST_FRAME

POOL = 1024  # distinct request bodies cycled through


def summarize(name: str, latencies_s: list[float], requests: int, elapsed_s: float) -> LoadResult:
    p50, p95, p99 = percentiles([s * 1000 for s in latencies_s], [50, 95, 99])
    return LoadResult(name, requests, 0, requests / elapsed_s, p50, p95, p99)


def timed_batches(name: str, bodies: list[bytes], seconds: float) -> LoadResult:
    """Parse, answer and encode consecutive batches of `bodies` for `seconds`, as a worker of archive `name`
    does; every request in a batch waits for all of it."""
    config = catalog.model(name).model_config()
    torch.set_num_threads(config["handler"]["threads"])  # the intra-op threads a shipped worker has
    served, batch = service(name), config["batchSize"]

    def run(chunk: list[bytes]) -> list[str]:
        return [answer.model_dump_json() for answer in served.answer([served.parse(body) for body in chunk])]

    latencies, done, began = [], 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = done % (len(bodies) - batch + 1)
        t0 = time.perf_counter()
        run(bodies[start : start + batch])
        latencies += [time.perf_counter() - t0] * batch
        done += batch
    return summarize(name, latencies, done, time.perf_counter() - began)


def interpolate(seconds: float, steps: int, rng: random.Random) -> dict[str, LoadResult]:
    """Streamed interpolations one after another, frame by frame as the handler streams them."""
    torch.set_num_threads(catalog.model("interpolate").model_config()["handler"]["threads"])
    served = service("interpolate")
    first, last, began = [], [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        body = json.dumps(workload.interpolation_body(rng, steps, stream=True)).encode()
        t0 = time.perf_counter()
        [stream] = served.answer([served.parse(body)])
        for k, frame in enumerate(stream):
            frame.model_dump_json()
            if k == 0:
                first.append(time.perf_counter() - t0)
        last.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    return {
        FIRST_FRAME: summarize(FIRST_FRAME, first, len(first), elapsed),
        LAST_FRAME: summarize(LAST_FRAME, last, len(last), elapsed),
    }


def measure(
    endpoints: tuple[str, ...], seconds: float, sample_n: int, steps: int, seed: int = 0
) -> dict[str, LoadResult]:
    """Each of `endpoints` in turn for `seconds` (there is no /ping without a server)."""
    rng = random.Random(seed)
    loads = {}
    if "palindrome" in endpoints:
        bodies = [json.dumps(workload.palindrome_body(rng)).encode() for _ in range(POOL)]
        loads["palindrome"] = timed_batches("palindrome", bodies, seconds)
    if "sample" in endpoints:
        loads["sample"] = timed_batches("sample", [json.dumps(workload.sample_body(sample_n)).encode()] * POOL, seconds)
    if "interpolate" in endpoints:
        loads |= interpolate(seconds, steps, rng)
    return loads
