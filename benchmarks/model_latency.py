"""Latency of the two requests issue 13 added: digit-conditioned `sample` and the long palindromes.

    python -m benchmarks.model_latency --repeats 10

- `sample` with `"digit": d`, n=16, for every digit: in-process (`digitlab.answers.sample_images` with
  the shipped generator, classifier and search limits, then the JSON answer) and over REST against a
  TorchServe started here; beside it a plain n=16 `sample`, and how many latent ids the search read.
- `palindrome` (the served LSTM) at T = 15 and T = 200: in-process forward and over REST.
Medians over `--repeats` seeds (one warm-up call first), each REST call interleaved with its in-process
twin, one torch thread (as the serving workers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.work import load_generator, load_palindrome, model_config, weights
from clients import rest
from digitlab.answers import palindrome_answers, sample_images
from digitlab.checkpoint import load_model
from digitlab.constants import NUM_CLASSES
from digitlab.generation import DigitSearch, sample_response
from digitlab.palindrome import palindrome_batch
from digitlab.schemas import PalindromeRequest, SampleRequest
from tools import server as ts

N_SAMPLES = 16
LENGTHS = (15, 200)


def timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn()
    return (time.perf_counter() - began) * 1000, out


def palindrome_prefix(length: int, seed: int) -> list[int]:
    """The first `length` digits of a random palindrome of length + 1 digits."""
    inputs, _ = palindrome_batch(1, length, torch.Generator().manual_seed(seed))  # (1, length)
    return inputs[0].tolist()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="seeds per measurement (medians)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    generator, _ = load_generator("sample")
    options = model_config("sample")["handler"]
    classifier = load_model(weights("sample").parent / options["classifier"], expect="classifier")
    search = DigitSearch(options["digit_search_budget"], options["digit_min_confidence"])
    lstm, _ = load_palindrome()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ts.serving(Path(tmp)) as server:
        def call(model: str, payload: dict) -> dict:
            return rest.predict(model, payload, url=server.endpoints.inference, token=server.key())

        work = [(f"digit {d}", {"n": N_SAMPLES, "digit": d}) for d in range(NUM_CLASSES)] + [("plain", {"n": N_SAMPLES})]
        for name, payload in tqdm(work, desc="sample"):
            for seed in range(args.repeats + 1):
                request = SampleRequest(**payload, seed=seed)

                def inprocess():
                    drawn = sample_images(generator, [request], classifier, search)[0]
                    return drawn, sample_response(drawn.seed, drawn.images, raw=False, indices=drawn.indices)

                local_ms, (drawn, _) = timed(inprocess)
                rest_ms, _ = timed(lambda: call("sample", {**payload, "seed": seed}))
                if seed == 0:
                    continue  # warm-up
                read = drawn.indices[-1] + 1 if drawn.indices else N_SAMPLES
                for key, value in (("local", local_ms), ("rest", rest_ms), ("ids", read)):
                    rows.setdefault(f"{name} {key}", []).append(value)
        for length in LENGTHS:
            for seed in range(args.repeats + 1):
                digits = palindrome_prefix(length, seed)
                local_ms, _ = timed(lambda: palindrome_answers(lstm, [PalindromeRequest(digits=digits)]))
                rest_ms, answer = timed(lambda: call("palindrome", {"digits": digits}))
                assert answer["digit"] == digits[0], (length, digits, answer)
                if seed:
                    rows.setdefault(f"T={length} local", []).append(local_ms)
                    rows.setdefault(f"T={length} rest", []).append(rest_ms)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"medians of {args.repeats}, ms (sample n={N_SAMPLES}; ids = latent ids the search read):")
    print("| request | in-process ms | REST ms | latent ids read |\n|---|---:|---:|---:|")
    for name, _ in work:
        print(f"| {name} | {med[f'{name} local']:.1f} | {med[f'{name} rest']:.1f} | {med[f'{name} ids']:.0f} |")
    print("\n| palindrome | in-process ms | REST ms |\n|---|---:|---:|")
    for length in LENGTHS:
        print(f"| T = {length} | {med[f'T={length} local']:.2f} | {med[f'T={length} rest']:.1f} |")


if __name__ == "__main__":
    main()
