"""Beyond the report: the longest palindrome each network still completes at >= 99 % accuracy.

    python -m training.long_memory --lengths 20 30 50 100 --steps 6000 --threads 1

For each model and target T (ascending), one network trains on every length 3..T with the recipe that
makes long lengths learnable: one-hot digits, a curriculum that grows the longest trained length from 3
to T over the first --curriculum-fraction of the steps, and cosine lr decay. Its accuracy at T is then
measured on --samples fresh palindromes. A model's search stops at its first T below --target: T_max is
the last T that passed, and its network is also scored at every length 3..T_max. Each run is saved as
<out-dir>/long_memory/<model>_T<T>.json (--resume skips it); long_memory.json and long_memory.png
gather them. Checkpoints go to --checkpoints, to pick the served model from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed
from tqdm import tqdm

from digitlab.checkpoint import load_model, read_checkpoint, save_checkpoint
from training.experiments import COLOURS, MODELS, save_json
from training.palindrome import FINAL_SEED_OFFSET, TrainConfig, accuracy_per_length, train


def train_to(cfg: TrainConfig, samples: int, checkpoint: Path) -> dict:
    """Train 3..T with `cfg`, save the network, and score it at T on `samples` fresh palindromes."""
    start = time.perf_counter()
    model, history = train(cfg, torch.device("cpu"), progress=False)
    (acc,) = accuracy_per_length(
        model, range(cfg.max_length, cfg.max_length + 1), samples, cfg.seed + FINAL_SEED_OFFSET
    ).values()
    meta = {"min_length": cfg.min_length, "max_length": cfg.max_length, "train": asdict(cfg), "history": history}
    save_checkpoint(checkpoint, model, meta)
    return {"config": asdict(cfg), "history": history, "accuracy_at_T": acc, "seconds": time.perf_counter() - start}


def adopt(checkpoint: Path, runs_dir: Path, checkpoints: Path) -> Path:
    """Record a network trained by `training.palindrome` on 3..T (its checkpoint carries the training config,
    history and per-length accuracy on 10,000 palindromes with the same seeds as `train_to`) as the study's
    run for its model and T, so a longer training of the recipe counts without training it twice."""
    meta = read_checkpoint(checkpoint)["meta"]
    model, length = meta["train"]["model"], meta["max_length"]
    run = {
        "config": meta["train"],
        "history": meta["history"],
        "accuracy_at_T": meta["accuracy"][str(length)],
        "seconds": None,
        "adopted_from": str(checkpoint),
    }
    save_json(runs_dir / f"{model}_T{length}.json", run)
    checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, checkpoints / f"{model}_T{length}.pt")
    return runs_dir / f"{model}_T{length}.json"


def search(
    base: TrainConfig,
    model: str,
    lengths,
    target: float,
    samples: int,
    runs_dir: Path,
    checkpoints: Path,
    resume: bool,
    adopted: frozenset[Path] = frozenset(),
) -> list[dict]:
    """Runs for ascending T until the first one whose accuracy at T is below `target` (saved runs are kept
    with `resume`, adopted ones always)."""
    runs = []
    bar = tqdm(sorted(lengths), desc=f"{model} long memory", unit="run")
    for length in bar:
        bar.set_postfix_str(f"T={length}")
        path = runs_dir / f"{model}_T{length}.json"
        if (resume and path.exists()) or path in adopted:
            run = json.loads(path.read_text())
        else:
            run = train_to(
                replace(base, model=model, max_length=length), samples, checkpoints / f"{model}_T{length}.pt"
            )
            save_json(path, run)
        runs.append(run)
        if run["accuracy_at_T"] < target:
            break
    return runs


def t_max(runs: list[dict], target: float) -> int | None:
    """The longest T whose run reached `target` (the search stops at the first failure)."""
    passed = [r["config"]["max_length"] for r in runs if r["accuracy_at_T"] >= target]
    return max(passed, default=None)


def scored_lengths(first: int, last: int, every: int) -> list[int]:
    """Every `every`-th length from `first`, and always `last`: where the T_max network is scored."""
    return sorted({*range(first, last + 1, every), last})


def plot_long_memory(results: dict, target: float, path: Path) -> None:
    """Left: accuracy at T of the network trained on 3..T. Middle: the T_max network at every length.
    Right: how fast each run learnt (eval accuracy over all its lengths vs step)."""
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    at_t, per_length, learning = fig.subplots(1, 3)
    style = {"lstm": {"linestyle": "-", "marker": "o"}, "rnn": {"linestyle": "--", "marker": "s", "markersize": 4}}
    for model, res in results.items():
        runs = res["runs"]
        at_t.plot(
            [r["config"]["max_length"] for r in runs],
            [r["accuracy_at_T"] for r in runs],
            color=COLOURS[model],
            label=f"{model.upper()} (T_max = {res['t_max']})",
            **style[model],
        )
        if res["per_length"]:
            per_length.plot(
                [int(t) for t in res["per_length"]],
                list(res["per_length"].values()),
                color=COLOURS[model],
                linestyle=style[model]["linestyle"],
                label=f"{model.upper()} trained on 3..{res['t_max']}",
            )
        for k, r in enumerate(runs):
            steps = [row["step"] for row in r["history"]]
            learning.plot(
                steps,
                [row["eval_accuracy"] for row in r["history"]],
                color=COLOURS[model],
                alpha=0.4 + 0.6 * (k + 1) / len(runs),
                label=f"{model.upper()} 3..{r['config']['max_length']}",
                **style[model],
            )
    for ax in (at_t, per_length):
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"{target:.0%} bar")
        ax.set_xlabel("palindrome length T (input digits)")
    at_t.set_title(f"accuracy at T ({target:.0%} bar), trained on 3..T")
    per_length.set_title("T_max network at every length")
    learning.set_title("eval accuracy over 3..T while training")
    learning.set_xlabel("training step")
    at_t.set_ylabel("accuracy (fresh palindromes)")
    at_t.set_ylim(0, 1.02)
    learning.set_ylim(0, 1.02)
    for ax in (at_t, per_length, learning):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small", ncol=2 if ax is learning else 1)
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 30, 50, 100], help="target lengths T, tried in order")
    p.add_argument("--min-length", type=int, default=3)
    p.add_argument("--encoding", choices=["scalar", "onehot"], default="onehot")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--curriculum-fraction", type=float, default=0.5, help="share of the steps spent growing the length")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--target", type=float, default=0.99, help="accuracy at T that counts as remembering T digits")
    p.add_argument("--samples", type=int, default=10_000, help="fresh palindromes per scored length")
    p.add_argument(
        "--per-length-every",
        type=int,
        default=1,
        help="score the T_max network at every k-th length from --min-length, and at T_max",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out-dir", type=Path, default=Path("docs/palindrome"))
    p.add_argument("--checkpoints", type=Path, default=Path("runs/long_memory"))
    p.add_argument("--resume", action="store_true", help="keep runs already saved under <out-dir>/long_memory")
    p.add_argument(
        "--adopt",
        type=Path,
        nargs="*",
        default=[],
        help="training.palindrome checkpoints (3..T) recorded as the runs for their model and T",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = TrainConfig(
        min_length=args.min_length,
        encoding=args.encoding,
        lr_schedule="cosine",
        steps=args.steps,
        curriculum_steps=int(args.curriculum_fraction * args.steps),
        eval_every=args.eval_every,
        seed=args.seed,
    )
    runs_dir = args.out_dir / "long_memory"
    runs_dir.mkdir(parents=True, exist_ok=True)
    adopted = frozenset(adopt(checkpoint, runs_dir, args.checkpoints) for checkpoint in args.adopt)
    summary = args.out_dir / "long_memory.json"
    # --resume keeps what an earlier run found: other models' results as they are, and the per-length
    # scores of a T_max network whose checkpoint is gone (checkpoints are not committed, the scores are).
    previous = json.loads(summary.read_text())["results"] if args.resume and summary.exists() else {}
    results = {m: r for m, r in previous.items() if m not in args.models}
    for model in args.models:
        runs = search(
            base, model, args.lengths, args.target, args.samples, runs_dir, args.checkpoints, args.resume, adopted
        )
        best = t_max(runs, args.target)
        per_length = {}
        checkpoint = args.checkpoints / f"{model}_T{best}.pt"
        if best is not None and not checkpoint.exists() and previous.get(model, {}).get("t_max") == best:
            per_length = previous[model]["per_length"]
        elif best is not None:  # the T_max network scored at every k-th length it was trained on
            per_length = accuracy_per_length(
                load_model(checkpoint),
                scored_lengths(args.min_length, best, args.per_length_every),
                args.samples,
                args.seed + FINAL_SEED_OFFSET,
            )
        results[model] = {"t_max": best, "runs": runs, "per_length": per_length}
        print(
            f"{model.upper()}: T_max = {best}; accuracy at T: "
            + ", ".join(f"T={r['config']['max_length']} {r['accuracy_at_T']:.4f}" for r in runs),
            flush=True,
        )
    results = {m: results[m] for m in MODELS if m in results}
    summary.write_text(json.dumps({"target": args.target, "train": asdict(base), "results": results}, indent=1))
    plot_long_memory(results, args.target, args.out_dir / "long_memory.png")
    return results


if __name__ == "__main__":
    main()
