"""Generator serving latency, side by side with the same work done in-process.

    python -m benchmarks.generator_latency --repeats 30

- `sample` n=64 end to end over REST (base64 PNGs) vs the generator's forward pass in-process, and vs
  forward + PNG encoding in-process (what the handler does besides TorchServe's own overhead);
- gRPC `StreamPredictions` of a 32-frame interpolation: time to first frame vs time to last frame.
Medians over `--repeats`, each measurement interleaved with its in-process twin.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from clients import grpc as grpc_client
from clients import rest
from digitlab.checkpoint import load_model
from digitlab.generation import generate, sample_response
from digitlab.latent import sample_latents
from tools import server as ts
from tools.build_archives import ROOT

N_SAMPLES, N_FRAMES = 64, 32


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def stream_times(server: ts.RunningServer, seed: int) -> tuple[float, float]:
    """(ms to first frame, ms to last frame) of one streamed interpolation."""
    payload = {"start": {"seed": seed, "index": 0}, "end": {"seed": seed, "index": 1}, "steps": N_FRAMES}
    began, first = time.perf_counter(), None
    for _ in grpc_client.stream("interpolate", payload, target=server.endpoints.grpc_inference, token=server.key()):
        first = first if first is not None else time.perf_counter()
    return (first - began) * 1000, (time.perf_counter() - began) * 1000


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the serving worker (handler.threads = 1)
    generator = load_model(ROOT / "weights" / "generator.pt", expect="generator")
    rows: dict[str, list[float]] = {k: [] for k in ("forward", "forward+png", "rest", "ttff", "ttlf")}
    with tempfile.TemporaryDirectory() as tmp, ts.serving(Path(tmp)) as server:
        for seed in range(args.repeats + 1):
            z = sample_latents(seed, N_SAMPLES)
            forward = timed(lambda: generate(generator, z))
            encoded = timed(lambda: sample_response(seed, generate(generator, z), raw=False))
            served = timed(lambda: rest.predict("sample", {"n": N_SAMPLES, "seed": seed},
                                                url=server.endpoints.inference, token=server.key()))
            first, last = stream_times(server, seed)
            if seed == 0:
                continue  # warm-up: first calls pay for lazy initialisation on both sides
            for key, value in zip(rows, (forward, encoded, served, first, last)):
                rows[key].append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"medians of {args.repeats}, ms:")
    print(f"| sample n={N_SAMPLES} | in-process forward | in-process forward + PNG | REST end to end | end to end / forward+PNG |")
    print("|---|---|---|---|---|")
    print(f"| | {med['forward']:.1f} | {med['forward+png']:.1f} | {med['rest']:.1f} | {med['rest'] / med['forward+png']:.2f}x |")
    print(f"\n| gRPC stream, {N_FRAMES} frames | first frame | last frame |\n|---|---|---|")
    print(f"| | {med['ttff']:.1f} | {med['ttlf']:.1f} |")


if __name__ == "__main__":
    main()
