"""Latency of the two costliest requests: digit-conditioned `sample` and the long palindromes.

    python -m benchmarks.models.latency --repeats 10

- `sample` with `"digit": d`, n=16, for every digit: in-process (the `sample` service of
  digitlab.serving with the shipped generator, classifier and search limits, to the JSON answer) and over REST against a
  TorchServe started here; beside it a plain n=16 `sample`, and how many latent ids the search read.
- `palindrome` (the served LSTM) at T = 15 and T = 200: in-process forward and over REST.
Medians over `--repeats` seeds (one warm-up call first), each REST call interleaved with its in-process
twin, one torch thread (as the serving workers).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.shared.pages import markdown_table
from benchmarks.shared.shipped import service
from clients.rest import RestClient
from digitlab.constants import NUM_CLASSES
from digitlab.digits import random_prefix
from digitlab.schemas import PalindromeRequest, SampleRequest
from ops import server as ops_server

N_SAMPLES = 16
LENGTHS = (15, 200)
PARTS = ("sample", "palindrome")


def timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return (time.perf_counter() - began) * 1000, out


def sample_table(call, repeats: int) -> str:
    """`sample` n=16 with each digit, and plain: in-process vs REST, and the ids each search read."""
    sample = service("sample")
    work = [(f"digit {d}", {"n": N_SAMPLES, "digit": d}) for d in range(NUM_CLASSES)] + [("plain", {"n": N_SAMPLES})]
    cells = []
    for name, payload in tqdm(work, desc="sample"):
        rows: dict[str, list[float]] = {"local": [], "rest": [], "ids": []}
        for seed in range(repeats + 1):
            request = SampleRequest(**payload, seed=seed)

            local_ms, answer = timed(lambda: sample.answer([request])[0])
            rest_ms, _ = timed(lambda: call("sample", {**payload, "seed": seed}))
            if seed:  # seed 0 is the warm-up
                rows["local"].append(local_ms)
                rows["rest"].append(rest_ms)
                rows["ids"].append(answer.images[-1].id.index + 1)  # ids read to find the n-th hit
        med = {k: statistics.median(v) for k, v in rows.items()}
        cells.append([name, f"{med['local']:.1f}", f"{med['rest']:.1f}", f"{med['ids']:.0f}"])
    return "\n".join(
        [
            f"medians of {repeats} seeds, sample n={N_SAMPLES} (ids read: latent ids the search went through)",
            markdown_table(["request", "in-process ms", "REST ms", "ids read"], cells, "lrrr"),
        ]
    )


def palindrome_table(call, repeats: int) -> str:
    """The served LSTM at T = 15 and T = 200: in-process forward + answer vs REST."""
    lstm = service("palindrome")
    cells = []
    for length in LENGTHS:
        local, served = [], []
        for seed in range(repeats + 1):
            digits, _ = random_prefix(length, random.Random(seed))
            local_ms, _ = timed(lambda: lstm.answer([PalindromeRequest(digits=digits)]))
            rest_ms, answer = timed(lambda: call("palindrome", {"digits": digits}))
            assert answer["digit"] == digits[0], (length, digits, answer)
            if seed:
                local.append(local_ms)
                served.append(rest_ms)
        cells.append([f"T = {length}", f"{statistics.median(local):.2f}", f"{statistics.median(served):.1f}"])
    table = markdown_table(["palindrome", "in-process ms", "REST ms"], cells, "lrr")
    return f"medians of {repeats} palindromes\n{table}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="seeds per measurement (medians)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the serving workers (handler.threads = 1)
    tables = {"sample": sample_table, "palindrome": palindrome_table}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ops_server.serving(Path(tmp)) as server,
        RestClient(server.endpoints.inference, server.key()) as client,  # one keep-alive session for every call
    ):
        call = client.predict
        for part in args.parts:
            print(tables[part](call, args.repeats) + "\n", flush=True)


if __name__ == "__main__":
    main()
