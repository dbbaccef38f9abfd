"""Measure the latent truncation trick on a generator: scores and digit shares per psi, both methods, and a figure.

    python -m training.truncation weights/generator.pt --n 10000 --data-dir ../shared/data --out-dir docs/gan/truncation

For each psi (1 = off) and each method of `digitlab.latent` ("scale": pull toward the mean; "resample":
redraw components outside the bound that keeps psi of N(0, 1)), scores n samples of latent ids
(seed, 0..n-1) with the MNIST classifier: FID, IS, KL to uniform, the classifier's mean confidence and the
digit shares. Writes scores.json, a Markdown table (table.md) and grids.png: the same 64 ids at every psi,
one row of grids per method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from digitlab.checkpoint import load_model
from digitlab.device import pick_device
from digitlab.imaging import to_uint8
from digitlab.latent import SERVED_TRUNCATION, TRUNCATION_METHODS
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist
from digitlab.scores import real_stats, sample_images, score_generator

GRID_IDS = 64  # samples per grid in the figure: ids (seed, 0..63)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("generator", help="generator checkpoint (digitlab.checkpoint format)")
    p.add_argument("--classifier", default="weights/classifier.pt")
    p.add_argument("--psi", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.5], help="truncations to score")
    p.add_argument("--methods", nargs="+", default=list(TRUNCATION_METHODS), choices=TRUNCATION_METHODS)
    p.add_argument("--n", type=int, default=10_000, help="samples per score (latent ids seed, 0..n-1)")
    p.add_argument("--seed", type=int, default=1, help="latent seed of the scored samples")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--out-dir", default="docs/gan/truncation")
    return p.parse_args(argv)


def table(rows: list[dict]) -> str:
    """The scores as a Markdown table, one row per (method, psi), digit shares in percent."""
    lines = [
        "| method | psi | FID ↓ | IS ↑ | KL ↓ | confidence ↑ | " + " | ".join(str(d) for d in range(10)) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * 10,
    ]
    for r in rows:
        served = " (served)" if r["method"] == SERVED_TRUNCATION else ""
        shares = " | ".join(f"{100 * h:.1f}" for h in r["histogram"])
        lines.append(
            f"| {r['method']}{served} | {r['psi']:g} | {r['fid']:.2f} | {r['inception_score']:.3f} | "
            f"{r['kl_uniform']:.4f} | {r['confidence']:.4f} | {shares} |"
        )
    return "\n".join(lines) + "\n"


def figure(generator: torch.nn.Module, methods: list[str], psis: list[float], seed: int, path: Path) -> None:
    """grids.png: rows = methods, columns = psi; each cell the same GRID_IDS ids as an 8 x 8 grid."""
    fig = Figure(figsize=(2.4 * len(psis), 2.6 * len(methods)))
    axes = fig.subplots(len(methods), len(psis), squeeze=False)
    for row, method in enumerate(methods):
        for col, psi in enumerate(psis):
            images = sample_images(generator, GRID_IDS, seed, psi=psi, method=method)  # (64, 1, 28, 28)
            tiles = to_uint8(images).reshape(8, 8, 28, 28).transpose(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
            ax = axes[row][col]
            ax.imshow(tiles, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{method}, psi = {psi:g}" if psi < 1 else "psi = 1 (off)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    classifier = load_model(args.classifier, device, expect="classifier")
    generator = load_model(args.generator, device, expect="generator").eval()
    reference = real_stats(classifier, load_mnist(args.data_dir, train=False).tensors[0])  # the test set
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(m, psi) for m in args.methods for psi in args.psi if psi < 1 or m == args.methods[0]]
    rows = []
    for method, psi in tqdm(runs, desc="truncation", unit="score"):
        scores = score_generator(generator, classifier, reference, n=args.n, seed=args.seed, psi=psi, method=method)
        rows.append({"method": method if psi < 1 else "off", "psi": psi, **scores})
    (out / "scores.json").write_text(
        json.dumps({"generator": args.generator, "seed": args.seed, "rows": rows}, indent=2)
    )
    (out / "table.md").write_text(table(rows))
    figure(generator, args.methods, args.psi, args.seed, out / "grids.png")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
