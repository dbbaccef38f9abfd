"""Build docs/gan figures from training runs and the shipped generator.

    python -m training.gan_figures --runs runs/gan-1-1 runs/gan-5-2 --generator weights/generator.pt --out-dir docs/gan

Writes samples_over_training.png (fixed-latent grids, one column per run), losses.png, scores.png
(classifier FID / IS / KL vs iteration), generator_samples.png, and the interpolation between a
generated 9 and a generated 3: interpolation.png (lerp and slerp rows, with the classifier's reading),
interpolation_{lerp,slerp}.png strips and .gif animations. Prints the equal-iteration score table.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed
from PIL import Image

from digitlab.checkpoint import load_model
from digitlab.device import pick_device
from digitlab.imaging import gif_bytes, grid_png, strip_png, to_uint8, write_bytes
from digitlab.latent import METHODS, find_latent_for_digit, interpolate
from digitlab.scores import sample_images
from training.gan_logs import plot_losses

# The targets the shipped generator is held to (10,000 samples), drawn as dotted lines on the score curves.
TARGETS = {"fid": 14.2, "inception_score": 9.2, "kl_uniform": 0.008}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--runs", nargs="+", default=["runs/gan-1-1", "runs/gan-5-2"], help="training.gan out-dirs")
    p.add_argument("--grids", type=int, default=5, help="iterations shown in the sample table (common to all runs)")
    p.add_argument("--generator", default="weights/generator.pt", help="generator for samples and interpolation")
    p.add_argument("--classifier", default="weights/classifier.pt")
    p.add_argument("--digits", type=int, nargs=2, default=(9, 3), help="interpolate from the first to the second")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="latent seed searched for the two digits")
    p.add_argument("--budget", type=int, default=4096, help="latent ids searched per digit")
    p.add_argument("--min-confidence", type=float, default=0.99)
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--out-dir", default="docs/gan")
    return p.parse_args(argv)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """A numeric CSV -> {column: values (rows,)}."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in (rows[0] if rows else [])}


def samples_table(runs: list[Path], count: int, path: Path) -> None:
    """Fixed-latent grids at `count` iterations common to all runs: rows = iterations, columns = runs."""
    common = sorted(
        set.intersection(*({int(p.stem.split("_")[1]) for p in (r / "samples").glob("iter_*.png")} for r in runs))
    )
    shown = [common[i] for i in np.unique(np.linspace(0, len(common) - 1, count).round().astype(int))]
    fig = Figure(figsize=(3 * len(runs), 3 * len(shown)))
    axes = fig.subplots(len(shown), len(runs), squeeze=False)
    for row, it in enumerate(shown):
        for col, run in enumerate(runs):
            ax = axes[row, col]
            ax.imshow(Image.open(run / "samples" / f"iter_{it:06d}.png"), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(run.name)
            if col == 0:
                ax.set_ylabel(f"iteration {it}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def losses_figure(runs: list[Path], path: Path) -> None:
    fig = Figure(figsize=(6 * len(runs), 3.5))
    axes = fig.subplots(1, len(runs), squeeze=False)
    for ax, run in zip(axes[0], runs):
        log = read_csv(run / "losses.csv")
        plot_losses(ax, torch.tensor(np.stack([log["loss_g"], log["loss_d"]], axis=1)), title=run.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def scores_figure(runs: list[Path], path: Path) -> None:
    """FID / IS / KL against iterations (top row) and against training seconds on this machine (bottom row)."""
    fig = Figure(figsize=(15, 7))
    axes = fig.subplots(2, 3)
    panels = (
        ("fid", "classifier FID (lower is better)", "log"),
        ("inception_score", "classifier IS (max 10)", "linear"),
        ("kl_uniform", "KL(class histogram || uniform)", "log"),
    )
    logs = {run: read_csv(run / "scores.csv") for run in runs}
    for row, (x_key, x_label) in enumerate(
        (("iteration", "iteration (generator updates)"), ("wall_s", "training seconds"))
    ):
        for ax, (key, label, scale) in zip(axes[row], panels):
            for run, log in logs.items():
                ax.plot(log[x_key], log[key], marker=".", label=run.name)
            ax.axhline(TARGETS[key], color="grey", linestyle=":", label=f"target {TARGETS[key]:g}")
            ax.set(xlabel=x_label, ylabel=label, yscale=scale)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def score_table(runs: list[Path]) -> str:
    """Markdown: each run's FID / IS / KL at the last iteration scored in all runs, then at its own end."""
    logs = {run: read_csv(run / "scores.csv") for run in runs}
    common = sorted(set.intersection(*(set(log["iteration"].astype(int)) for log in logs.values())))
    lines = ["| run | iteration | epochs | training s | FID | IS | KL |", "|---|---|---|---|---|---|---|"]
    for run, log in logs.items():
        rows = [int(np.flatnonzero(log["iteration"] == it)[0]) for it in common[-1:]] + [len(log["iteration"]) - 1]
        for i in dict.fromkeys(rows):  # equal-iteration row, then the final row when it differs
            lines.append(
                f"| {run.name} | {int(log['iteration'][i])} | {log['epoch'][i]:.1f} | {log['wall_s'][i]:.0f} "
                f"| {log['fid'][i]:.2f} | {log['inception_score'][i]:.3f} | {log['kl_uniform'][i]:.4f} |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class Interpolation:
    """What the interpolation figures show: a path between two digits of `generator`, read by `classifier`."""

    generator: Path
    classifier: Path
    digits: tuple[int, int]
    frames: int
    seed: int  # the latent seed searched for the two digits (and the samples' seed)
    budget: int
    min_confidence: float


@torch.no_grad()
def interpolation_figures(spec: Interpolation, out: Path, device: torch.device) -> None:
    generator = load_model(spec.generator, device, expect="generator")
    classifier = load_model(spec.classifier, device, expect="classifier")
    write_bytes(out / "generator_samples.png", grid_png(sample_images(generator, 100, spec.seed), nrow=10))
    start, end = (
        find_latent_for_digit(generator, classifier, d, spec.seed, spec.budget, spec.min_confidence)
        for d in spec.digits
    )
    print(
        f"latent ids: {spec.digits[0]} = (seed {start.seed}, index {start.index}, p {start.confidence:.3f}); "
        f"{spec.digits[1]} = (seed {end.seed}, index {end.index}, p {end.confidence:.3f})"
    )
    fig = Figure(figsize=(1.2 * spec.frames, 1.6 * len(METHODS)))
    axes = fig.subplots(len(METHODS), spec.frames, squeeze=False)
    for row, method in enumerate(METHODS):
        frames = generator(interpolate(start.z, end.z, spec.frames, method).to(device)).cpu()  # (T, 1, 28, 28)
        probs = classifier(frames.to(device)).softmax(dim=1).cpu()  # (T, 10)
        write_bytes(out / f"interpolation_{method}.png", strip_png(frames))
        write_bytes(out / f"interpolation_{method}.gif", gif_bytes(to_uint8(frames), duration_ms=150))
        for col, (image, p) in enumerate(zip(to_uint8(frames), probs)):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{int(p.argmax())} ({float(p.max()):.2f})", fontsize=8)
        axes[row, 0].set_ylabel(method)
    fig.suptitle(f"{spec.digits[0]} -> {spec.digits[1]}: classifier reading (probability) under each frame", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "interpolation.png", dpi=100)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in args.runs]
    samples_table(runs, args.grids, out / "samples_over_training.png")
    losses_figure(runs, out / "losses.png")
    scores_figure(runs, out / "scores.png")
    print(score_table(runs))
    spec = Interpolation(
        Path(args.generator),
        Path(args.classifier),
        tuple(args.digits),
        args.frames,
        args.seed,
        args.budget,
        args.min_confidence,
    )
    interpolation_figures(spec, out, pick_device(args.device))
    return out


if __name__ == "__main__":
    main()
