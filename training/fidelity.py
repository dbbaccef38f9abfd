"""Are requested digits read as asked? Measure each way of drawing them with the independent judge.

    python -m training.fidelity --per-digit 32 --seeds 1 2 3 4 --threads 1 --out-dir docs/gan/digits

Each route is the `sample` service exactly as served (digitlab.serving, the shipped model config's options
with the route's changes), asked for every digit over several seeds. The judge (training.judge: an MNIST reader
that shares nothing with the product's classifier and that no archive carries) reads every image; a sample
counts as read as asked when the judge gives the asked digit p >= 0.99. Printed: a markdown table per route
(overall, the weakest digit, p >= 0.9 as well) and the in-process cost of a request of 16 with a digit against
one without, and of a 64-step digit-to-digit interpolation (CPU medians, one thread). Written: one grid per
route (a row per digit, judged misses framed in red) and a 9 -> 3 interpolation strip with the classifier's
reading of every frame.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure  # Agg canvas, no pyplot state
from PIL import Image

from digitlab import catalog, serving
from digitlab.checkpoint import load_model
from digitlab.constants import NUM_CLASSES
from digitlab.generator_service import InterpolateService, SampleService
from digitlab.imaging import to_uint8
from digitlab.schemas import InterpolateRequest, SampleRequest
from digitlab.scores import FIDELITY_CONFIDENCE, classify_logits

# The ways a digit request can be drawn: option changes on the shipped `sample` config. The first is what was
# served before the digit generator; "search, p >= 0.99" is route (b) of issue 28, a stricter acceptance on the
# report's generator; the digit generator alone shows what training gave, and with acceptance what is served.
ROUTES = {
    "search, p >= 0.9 (before)": {"digit_generator": None, "digit_min_confidence": 0.9},
    "search, p >= 0.99": {"digit_generator": None, "digit_min_confidence": 0.99},
    "digit generator, no acceptance": {"digit_generator": "digit_generator.pt", "digit_min_confidence": 0.0},
    "digit generator, p >= 0.99": {"digit_generator": "digit_generator.pt", "digit_min_confidence": 0.99},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--judge", default="weights/judge.pt", help="the independent reader (training.judge)")
    p.add_argument("--per-digit", type=int, default=32, help="samples judged per digit, split over the seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES), metavar="ROUTE")
    p.add_argument("--repeats", type=int, default=10, help="timed requests per kind (medians)")
    p.add_argument("--path", type=int, nargs=2, default=(9, 3), help="the interpolation strip's two digits")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as a worker is configured")
    p.add_argument("--out-dir", type=Path, default=Path("docs/gan/digits"))
    return p.parse_args(argv)


class Judged(NamedTuple):
    images: torch.Tensor  # (10, per_digit, 1, 28, 28), row d asked for digit d
    p_asked: torch.Tensor  # (10, per_digit): the judge's probability of the asked digit


def service(kind: str, changes: dict) -> SampleService | InterpolateService:
    """The shipped `kind` service with the route's option changes, as a worker would load it."""
    served = catalog.model(kind)
    options = served.handler_options().model_copy(update=changes)
    return serving.load(served.kind, catalog.ROOT / served.weights, options)


def judge_route(sampler: SampleService, judge: torch.nn.Module, per_digit: int, seeds: list[int]) -> Judged:
    n = per_digit // len(seeds)
    rows = []
    for digit in range(NUM_CLASSES):
        requests = [SampleRequest(n=n, seed=seed, digit=digit) for seed in seeds]
        rows.append(torch.cat([drawn.images for drawn in sampler.draw(requests)]))  # (per_digit, 1, 28, 28)
    images = torch.stack(rows)  # (10, per_digit, 1, 28, 28)
    probs = classify_logits(judge, images.flatten(0, 1)).softmax(dim=1).view(NUM_CLASSES, -1, NUM_CLASSES)
    return Judged(images, probs[torch.arange(NUM_CLASSES), :, torch.arange(NUM_CLASSES)])  # (10, per_digit)


def grid_with_misses(judged: Judged, path: Path, threshold: float = FIDELITY_CONFIDENCE) -> None:
    """Row d: the samples asked for digit d; a sample the judge does not read as d with p >= threshold is framed red."""
    pad, size = 2, 28
    digits, per = judged.p_asked.shape
    canvas = np.zeros((digits * (size + 2 * pad), per * (size + 2 * pad), 3), np.uint8)
    pixels = to_uint8(judged.images.flatten(0, 1)).reshape(digits, per, size, size)
    for d in range(digits):
        for k in range(per):
            y, x = d * (size + 2 * pad), k * (size + 2 * pad)
            if judged.p_asked[d, k] < threshold:
                canvas[y : y + size + 2 * pad, x : x + size + 2 * pad] = (220, 30, 30)
            canvas[y + pad : y + pad + size, x + pad : x + pad + size] = pixels[d, k, :, :, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST).save(path)


def cpu_ms(call, repeats: int) -> float:
    """Median CPU milliseconds of `call()` (the worker's cost, whatever else the machine runs)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def costs(changes: dict, repeats: int) -> dict[str, float]:
    """In-process CPU medians: a 16-sample request with and without a digit, a 64-step 9 -> 3 interpolation."""
    sampler, interpolator = service("sample", changes), service("interpolate", changes)
    plain = [SampleRequest(n=16, seed=s) for s in range(repeats)]
    digit = [SampleRequest(n=16, seed=s, digit=s % NUM_CLASSES) for s in range(repeats)]
    path = [
        InterpolateRequest.model_validate(
            {"start": {"digit": 9, "seed": s}, "end": {"digit": 3, "seed": s}, "steps": 64}
        )
        for s in range(repeats)
    ]
    it = {k: iter(v) for k, v in (("plain", plain), ("digit", digit), ("path", path))}
    return {
        "plain": cpu_ms(lambda: sampler.answer([next(it["plain"])]), repeats),
        "digit": cpu_ms(lambda: sampler.answer([next(it["digit"])]), repeats),
        "path": cpu_ms(lambda: interpolator.answer([next(it["path"])]), repeats),
    }


def strip(changes: dict, start: int, end: int, path: Path, steps: int = 16) -> None:
    """The frames of a start -> end interpolation and the classifier's reading of each (what a client receives)."""
    interpolator = service("interpolate", changes)
    request = InterpolateRequest.model_validate({"start": {"digit": start}, "end": {"digit": end}, "steps": steps})
    answer = interpolator.answer([request])[0]
    fig = Figure(figsize=(steps * 0.55, 1.9))
    axes = fig.subplots(1, steps)
    for ax, frame in zip(axes, answer.frames):
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(frame.png))))
        ax.imshow(image, cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"{frame.digit}\n{frame.confidence:.2f}", fontsize=7)
    fig.suptitle(f"{start} -> {end}, {steps} frames: the classifier's digit and p above each", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    judge = load_model(args.judge, expect="judge")
    results = {}
    print(f"| route | read as asked, p >= {FIDELITY_CONFIDENCE} | weakest digit | p >= 0.9 | grid |")
    print("|---|---:|---:|---:|---|")
    for name in args.routes:
        judged = judge_route(service("sample", ROUTES[name]), judge, args.per_digit, args.seeds)
        per_digit = (judged.p_asked >= FIDELITY_CONFIDENCE).double().mean(dim=1)  # (10,)
        weakest = int(per_digit.argmin())
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip(
            "-"
        )  # "digit generator, p >= 0.99" -> digit-generator-p-0-99
        grid = args.out_dir / f"{slug}.png"
        grid_with_misses(judged, grid)
        results[name] = {
            "overall": float((judged.p_asked >= FIDELITY_CONFIDENCE).double().mean()),
            "loose": float((judged.p_asked >= 0.9).double().mean()),
            "per_digit": [round(float(x), 4) for x in per_digit],
        }
        r = results[name]
        print(
            f"| {name} | {r['overall']:.1%} | {weakest}: {per_digit[weakest]:.1%} | {r['loose']:.1%} | "
            f"[grid]({grid.name}) |"
        )
    print("\nper digit, p >= 0.99:")
    for name, r in results.items():
        print(f"  {name}: " + "  ".join(f"{d}: {x:.0%}" for d, x in enumerate(r["per_digit"])))
    print(f"\nin-process CPU ms, medians of {args.repeats}, {args.threads} thread(s):")
    print("| route | n = 16 plain | n = 16 with a digit | ratio | 64-step 9 -> 3 |")
    print("|---|---:|---:|---:|---:|")
    for name in args.routes:
        c = costs(ROUTES[name], args.repeats)
        results[name]["cost_ms"] = c
        print(f"| {name} | {c['plain']:.1f} | {c['digit']:.1f} | {c['digit'] / c['plain']:.1f}x | {c['path']:.1f} |")
    served = [n for n in args.routes if ROUTES[n]["digit_generator"] and ROUTES[n]["digit_min_confidence"]]
    if served:
        strip(ROUTES[served[0]], *args.path, args.out_dir / f"path_{args.path[0]}_to_{args.path[1]}.png")
    return results


if __name__ == "__main__":
    main()
