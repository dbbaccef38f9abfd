"""Part I of the report, reproduced: {lstm, rnn} x T in {3, 5, 7, 10, 15} x seeds, with figures.

    python -m training.experiments --out-dir docs/palindrome --seeds 0 1 2 --steps 5000 --threads 1

Each run trains one length T with the report's hyper-parameters (the `TrainConfig` defaults: hidden 128,
batch 128, Adam lr 1e-3 constant, gradient norm clip 10) and logs loss and accuracy on fresh palindromes
every --eval-every steps. Each finished run is saved at once as <out-dir>/runs/<model>_T<T>_seed<seed>.json,
so --resume skips it after an interruption; histories.csv, summary.json, curves.png and
final_accuracy.png are then rebuilt from all runs. Runs on the CPU: the same seeds give the same numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed
from tqdm import tqdm

from digitlab.constants import NUM_CLASSES
from digitlab.palindrome import accuracy
from training.palindrome import FINAL_SEED_OFFSET, TrainConfig, train

MODELS = ("lstm", "rnn")
LENGTHS = (3, 5, 7, 10, 15)
COLOURS = {"lstm": "tab:blue", "rnn": "tab:orange"}
HISTORY_FIELDS = ("model", "length", "seed", "step", "train_loss", "eval_loss", "eval_accuracy")
SOLVED = 0.99  # eval accuracy that counts as "learnt": how fast a run gets there separates runs that all end at 100 %


def run_name(model: str, length: int, seed: int) -> str:
    return f"{model}_T{length}_seed{seed}"


def save_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written result to resume from


def run_one(cfg: TrainConfig, final_samples: int) -> dict:
    """Train one (model, T, seed) on the CPU; its history plus accuracy on `final_samples` fresh palindromes."""
    start = time.perf_counter()
    model, history = train(cfg, torch.device("cpu"), progress=False)
    final = accuracy(model, cfg.max_length, final_samples, cfg.seed + FINAL_SEED_OFFSET)
    return {"config": asdict(cfg), "history": history, "final_accuracy": final, "seconds": time.perf_counter() - start}


def run_grid(base: TrainConfig, models, lengths, seeds, final_samples: int, runs_dir: Path, resume: bool) -> list[dict]:
    """Every (model, T, seed), each saved as JSON when done; with `resume`, saved runs are read, not retrained."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    grid = [(m, t, s) for m in models for t in lengths for s in seeds]
    runs = []
    bar = tqdm(grid, desc="grid", unit="run")
    for model, length, seed in bar:
        name = run_name(model, length, seed)
        bar.set_postfix_str(name)
        path = runs_dir / f"{name}.json"
        if resume and path.exists():
            runs.append(json.loads(path.read_text()))
            continue
        run = run_one(replace(base, model=model, min_length=length, max_length=length, seed=seed), final_samples)
        save_json(path, run)
        runs.append(run)
    return runs


def group_runs(runs: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """{(model, T): runs over seeds}, in grid order."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["config"]["model"], run["config"]["max_length"]), []).append(run)
    return groups


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def steps_to_solve(history: list[dict]) -> int | None:
    """The first evaluated step with eval accuracy >= SOLVED; None if the run never got there."""
    return next((row["step"] for row in history if row["eval_accuracy"] >= SOLVED), None)


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (model, T) over seeds (std: sample, n - 1): final accuracy, final eval loss, and steps
    to SOLVED among the runs that got there (`solved` counts them)."""
    rows = []
    for (model, length), group in group_runs(runs).items():
        solved = [s for s in (steps_to_solve(r["history"]) for r in group) if s is not None]
        rows.append(
            {
                "model": model,
                "length": length,
                "seeds": [r["config"]["seed"] for r in group],
                "final_accuracy": spread([r["final_accuracy"] for r in group]),
                "final_eval_loss": spread([r["history"][-1]["eval_loss"] for r in group]),
                "solved": len(solved),
                "steps_to_solve": spread(solved) if solved else None,
            }
        )
    return rows


def accuracy_cell(row: dict) -> str:
    return f"{100 * row['final_accuracy']['mean']:.2f} ± {100 * row['final_accuracy']['std']:.2f}"


def steps_cell(row: dict) -> str:
    """Mean ± std steps to SOLVED over the runs that got there, and how many did when not all."""
    if row["steps_to_solve"] is None:
        return "never"
    cell = f"{row['steps_to_solve']['mean']:.0f} ± {row['steps_to_solve']['std']:.0f}"
    return cell if row["solved"] == len(row["seeds"]) else f"{cell} ({row['solved']}/{len(row['seeds'])} runs)"


def markdown_table(summary: list[dict], cell) -> str:
    """Rows = models, columns = T, entries = cell(summary row)."""
    lengths = sorted({row["length"] for row in summary})
    lines = ["| model | " + " | ".join(f"T = {t}" for t in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for model in dict.fromkeys(row["model"] for row in summary):
        rows = {row["length"]: row for row in summary if row["model"] == model}
        lines.append(f"| {model.upper()} | " + " | ".join(cell(rows[t]) for t in lengths) + " |")
    return "\n".join(lines)


def write_histories(runs: list[dict], path: Path) -> None:
    """Every evaluation row of every run, long format: one CSV for any later analysis."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for run in runs:
            cfg = run["config"]
            for row in run["history"]:
                writer.writerow({"model": cfg["model"], "length": cfg["max_length"], "seed": cfg["seed"], **row})


def plot_curves(runs: list[dict], path: Path) -> None:
    """Eval loss (top) and accuracy (bottom) vs step, one column per T: mean over seeds, min-max band."""
    groups = group_runs(runs)
    lengths = sorted({length for _, length in groups})
    fig = Figure(figsize=(3.6 * len(lengths), 6.4), layout="constrained")
    axes = fig.subplots(2, len(lengths), sharex=True, squeeze=False)
    for (model, length), group in groups.items():
        col = lengths.index(length)
        steps = [row["step"] for row in group[0]["history"]]
        for ax, key in zip(axes[:, col], ("eval_loss", "eval_accuracy")):
            values = np.array([[row[key] for row in r["history"]] for r in group])  # (seeds, evaluations)
            ax.plot(steps, values.mean(0), color=COLOURS[model], label=f"{model.upper()} ({len(group)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), color=COLOURS[model], alpha=0.25, linewidth=0)
        axes[0, col].set_title(f"T = {length}")
    for col in range(len(lengths)):
        axes[0, col].set_yscale("log")
        axes[1, col].set_ylim(0, 1.02)
        axes[1, col].set_xlabel("training step")
    axes[0, 0].set_ylabel("eval cross-entropy (log)")
    axes[1, 0].set_ylabel("eval accuracy")
    axes[1, 0].legend(loc="lower right")
    fig.suptitle("Fresh-palindrome loss and accuracy: mean over seeds, band = min-max")
    fig.savefig(path, dpi=110)


def plot_final_accuracy(summary: list[dict], path: Path) -> None:
    """Final accuracy vs T per model: mean with a min-max error bar over seeds, and the 10 % of guessing."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for model in dict.fromkeys(row["model"] for row in summary):
        rows = [row for row in summary if row["model"] == model]
        t = [row["length"] for row in rows]
        acc = np.array([[row["final_accuracy"][k] for k in ("mean", "min", "max")] for row in rows])  # (T, 3)
        ax.errorbar(
            t,
            acc[:, 0],
            yerr=[acc[:, 0] - acc[:, 1], acc[:, 2] - acc[:, 0]],
            marker="o",
            capsize=4,
            color=COLOURS[model],
            label=model.upper(),
        )
    ax.axhline(1 / NUM_CLASSES, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("palindrome length T (input digits)")
    ax.set_ylabel("final accuracy (fresh palindromes)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    d = TrainConfig()
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--steps",
        type=int,
        default=5000,
        help="training steps per run: the report's 50 epochs x 100 steps (an LSTM at T = 15 can sit at "
        "chance for thousands of steps before it learns)",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-samples", type=int, default=d.eval_samples, help="fresh palindromes per evaluation")
    p.add_argument("--final-samples", type=int, default=10_000, help="fresh palindromes for each run's final accuracy")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results are deterministic per setting)")
    p.add_argument("--out-dir", type=Path, default=Path("docs/palindrome"))
    p.add_argument("--resume", action="store_true", help="keep runs already saved under <out-dir>/runs")
    p.add_argument("--quick", action="store_true", help="a tiny grid with a tiny network, in seconds (for tests)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = TrainConfig(steps=args.steps, eval_every=args.eval_every, eval_samples=args.eval_samples)
    if args.quick:
        args.lengths, args.seeds, args.final_samples = args.lengths[:2], args.seeds[:1], 200
        base = TrainConfig(hidden_dim=16, batch_size=16, steps=40, eval_every=10, eval_samples=64)
    start = time.perf_counter()
    runs = run_grid(base, args.models, args.lengths, args.seeds, args.final_samples, args.out_dir / "runs", args.resume)
    summary = summarise(runs)
    write_histories(runs, args.out_dir / "histories.csv")
    train_seconds = sum(r["seconds"] for r in runs)
    (args.out_dir / "summary.json").write_text(
        json.dumps(
            {"train": asdict(base), "threads": args.threads, "train_seconds": train_seconds, "rows": summary}, indent=1
        )
    )
    plot_curves(runs, args.out_dir / "curves.png")
    plot_final_accuracy(summary, args.out_dir / "final_accuracy.png")
    print(f"{len(runs)} runs, {train_seconds:.0f} s of training ({time.perf_counter() - start:.0f} s this call)")
    print(f"\nfinal accuracy (%) on {args.final_samples} fresh palindromes, mean ± std over seeds:")
    print(markdown_table(summary, accuracy_cell))
    print(f"\nsteps until eval accuracy >= {SOLVED:.0%}, mean ± std over seeds:")
    print(markdown_table(summary, steps_cell))
    return summary


if __name__ == "__main__":
    main()
