"""A GAN run's logs as people read them: losses.csv, scores.csv and the loss curves (training.gan writes them)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed

SCORE_FIELDS = ("iteration", "epoch", "wall_s", "fid", "inception_score", "kl_uniform")


def write_logs(out: Path, state: dict) -> None:
    """Rewrite losses.csv, losses.png and scores.csv from the history kept in the training state."""
    with open(out / "losses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "loss_g", "loss_d"])
        writer.writerows([i + 1, f"{g:.5f}", f"{d:.5f}"] for i, (g, d) in enumerate(state["losses"]))
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SCORE_FIELDS)
        writer.writerows(state["scores"])
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    plot_losses(ax, torch.tensor(state["losses"]))
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=100)


def plot_losses(ax: Axes, losses: torch.Tensor, title: str = "") -> None:
    """Draw losses (iterations, 2) = (G, D) per iteration on `ax`, averaged over ~200 windows."""
    window = max(1, len(losses) // 200)
    smooth = losses[: len(losses) // window * window].view(-1, window, 2).mean(dim=1)  # (points, 2)
    x = torch.arange(len(smooth)) * window + window
    ax.plot(x, smooth[:, 0], label="generator")
    ax.plot(x, smooth[:, 1], label="discriminator (real + fake)")
    ax.set(xlabel="iteration (generator updates)", ylabel=f"BCE loss, mean of {window}", title=title)
    ax.legend()
