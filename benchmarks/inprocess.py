"""Target (a) of `make bench`: the core calls in this process, batched as a worker batches: the compute limit.

Each request costs here what it costs a handler (parse the JSON body, its share of one forward per
batch, encode the JSON answer) and nothing else: no HTTP, no queue, no frontend-worker hop. Batches
take the shipped batchSize; latency is the time of the batch a request is in.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.locust_run import FIRST_FRAME, LAST_FRAME, LoadResult
from benchmarks.work import load_generator, load_palindrome, model_config, sample_answers, weights
from digitlab.answers import palindrome_answers
from digitlab.checkpoint import load_model
from digitlab.generation import DigitSearch, frames, generate, interpolation_latents
from digitlab.palindrome import palindrome_batch
from digitlab.schemas import MAX_SEED, InterpolateRequest, PalindromeRequest, SampleRequest, parse_request

POOL = 1024  # distinct request bodies cycled through, drawn like the locust users draw them


def summarize(name: str, latencies_s: list[float], requests: int, elapsed_s: float) -> LoadResult:
    p50, p95, p99 = np.percentile(np.array(latencies_s) * 1000, [50, 95, 99])
    return LoadResult(name, requests, 0, requests / elapsed_s, float(p50), float(p95), float(p99))


def timed_batches(name: str, run: Callable[[list[bytes]], object], bodies: list[bytes], batch: int,
                  seconds: float) -> LoadResult:
    """Call `run` on consecutive batches of `bodies` for `seconds`; every request in a batch waits for all of it."""
    latencies, done, began = [], 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        start = done % (len(bodies) - batch + 1)
        t0 = time.perf_counter()
        run(bodies[start:start + batch])
        latencies += [time.perf_counter() - t0] * batch
        done += batch
    return summarize(name, latencies, done, time.perf_counter() - began)


def worker_threads(name: str) -> None:
    """Give torch the intra-op threads a shipped worker of `name` has (model config handler.threads)."""
    torch.set_num_threads(model_config(name)["handler"]["threads"])


def palindrome(seconds: float, rng: random.Random) -> LoadResult:
    worker_threads("palindrome")
    model, lengths = load_palindrome()
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    bodies = [json.dumps({"digits": palindrome_batch(1, rng.randint(lengths["min_length"], lengths["max_length"]),
                                                     generator)[0][0].tolist()}).encode() for _ in range(POOL)]

    def run(batch: list[bytes]) -> list[str]:
        requests = [parse_request(PalindromeRequest, body, lengths) for body in batch]
        return [answer.model_dump_json() for answer in palindrome_answers(model, requests)]

    return timed_batches("palindrome", run, bodies, model_config("palindrome")["batchSize"], seconds)


def sample(seconds: float, n: int) -> LoadResult:
    worker_threads("sample")
    generator, limits = load_generator("sample")
    bodies = [json.dumps({"n": n}).encode()] * POOL

    def run(batch: list[bytes]) -> list[str]:
        requests = [parse_request(SampleRequest, body, limits) for body in batch]
        return [answer.model_dump_json() for answer in sample_answers(generator, requests)]

    return timed_batches("sample", run, bodies, model_config("sample")["batchSize"], seconds)


def interpolate(seconds: float, steps: int, rng: random.Random) -> dict[str, LoadResult]:
    """Streamed interpolations one after another, frame by frame as the handler streams them."""
    worker_threads("interpolate")
    generator, limits = load_generator("interpolate")
    options = model_config("interpolate")["handler"]
    classifier = load_model(weights("interpolate").parent / options["classifier"], expect="classifier")
    search = DigitSearch(options["digit_search_budget"], options["digit_min_confidence"])
    first, last, began = [], [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        seed = rng.randrange(MAX_SEED)
        body = json.dumps({"start": {"seed": seed, "index": 0}, "end": {"seed": seed, "index": 1}, "steps": steps,
                           "stream": True}).encode()
        t0 = time.perf_counter()
        z = interpolation_latents(parse_request(InterpolateRequest, body, limits), generator, classifier, search)
        for k in range(len(z)):
            frames(generate(generator, z[k:k + 1]), classifier, k, len(z))[0].model_dump_json()
            if k == 0:
                first.append(time.perf_counter() - t0)
        last.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    return {FIRST_FRAME: summarize(FIRST_FRAME, first, len(first), elapsed),
            LAST_FRAME: summarize(LAST_FRAME, last, len(last), elapsed)}


def measure(endpoints: tuple[str, ...], seconds: float, sample_n: int, steps: int,
            seed: int = 0) -> dict[str, LoadResult]:
    """Each of `endpoints` in turn for `seconds` (there is no /ping without a server)."""
    rng = random.Random(seed)
    loads = {}
    if "palindrome" in endpoints:
        loads["palindrome"] = palindrome(seconds, rng)
    if "sample" in endpoints:
        loads["sample"] = sample(seconds, sample_n)
    if "interpolate" in endpoints:
        loads |= interpolate(seconds, steps, rng)
    return loads
