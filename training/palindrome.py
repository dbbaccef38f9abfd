"""Train the palindrome digit predictor (LSTM or RNN) on freshly generated palindromes.

    python -m training.palindrome --model lstm --min-length 3 --max-length 15 --out weights/palindrome_lstm.pt

Every step draws a new batch, so there is no dataset to overfit; evaluation uses palindromes from a
separate seed. With a length range, each step trains on one length drawn uniformly from it, so one
model serves every length in the range. With --curriculum-steps, the longest length drawn grows from
--min-length to --max-length over those first steps: long palindromes are learnt after short ones.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from digitlab.checkpoint import save_checkpoint
from digitlab.device import pick_device
from digitlab.networks import PalindromeConfig, PalindromeNet
from digitlab.palindrome import accuracy, palindrome_batch

EVAL_SEED_OFFSET = 10_000  # evaluation palindromes come from seed + this, never from the training stream
FINAL_SEED_OFFSET = 2 * EVAL_SEED_OFFSET  # final per-length scores: apart from training and evaluation


@dataclass(frozen=True)
class TrainConfig:
    model: str = "lstm"
    min_length: int = 3
    max_length: int = 15
    encoding: str = "scalar"
    hidden_dim: int = 128
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" (the report) | "cosine" (decay to 0: sharper final accuracy)
    clip: float = 10.0
    steps: int = 3000
    curriculum_steps: int = 0  # steps over which the longest drawn length grows to max_length (0: none)
    eval_every: int = 100
    eval_samples: int = 1000  # per evaluation, spread over the length range
    seed: int = 0


def learning_rate(cfg: TrainConfig, step: int) -> float:
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
    return cfg.lr


def length_range(cfg: TrainConfig, step: int) -> tuple[int, int]:
    """The (shortest, longest) length drawn at `step`: the longest grows linearly over the curriculum."""
    if step >= cfg.curriculum_steps:
        return cfg.min_length, cfg.max_length
    return cfg.min_length, cfg.min_length + (cfg.max_length - cfg.min_length) * step // cfg.curriculum_steps


@torch.inference_mode()
def evaluate(model: PalindromeNet, cfg: TrainConfig, samples: int, seed: int) -> tuple[float, float]:
    """(mean loss, accuracy) on fresh palindromes, `samples` split evenly over the length range."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    lengths = range(cfg.min_length, cfg.max_length + 1)
    per_length = max(1, samples // len(lengths))
    loss, correct, total = 0.0, 0, 0
    for length in lengths:
        inputs, targets = palindrome_batch(per_length, length, generator)
        logits = model(inputs.to(device))
        loss += float(nn.functional.cross_entropy(logits, targets.to(device), reduction="sum"))
        correct += int((logits.argmax(1).cpu() == targets).sum())
        total += per_length
    return loss / total, correct / total


def train(cfg: TrainConfig, device: torch.device, progress: bool = True) -> tuple[PalindromeNet, list[dict]]:
    """Train from scratch; returns the model (eval mode) and one history row per evaluation."""
    torch.manual_seed(cfg.seed)
    draw_length = random.Random(cfg.seed)
    data = torch.Generator().manual_seed(cfg.seed)
    model = PalindromeNet(PalindromeConfig(cell=cfg.model, hidden_dim=cfg.hidden_dim, encoding=cfg.encoding)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    bar = tqdm(range(1, cfg.steps + 1), desc=f"{cfg.model} T={cfg.min_length}..{cfg.max_length}", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step - 1)
        inputs, targets = palindrome_batch(cfg.batch_size, draw_length.randint(*length_range(cfg, step - 1)), data)
        model.train()
        loss = nn.functional.cross_entropy(model(inputs.to(device)), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            eval_loss, eval_acc = evaluate(model, cfg, cfg.eval_samples, cfg.seed + EVAL_SEED_OFFSET)
            history.append({"step": step, "train_loss": loss.item(), "eval_loss": eval_loss, "eval_accuracy": eval_acc})
            bar.set_postfix(loss=f"{eval_loss:.4f}", acc=f"{eval_acc:.4f}")
    return model.eval(), history


def accuracy_per_length(model: PalindromeNet, lengths: Iterable[int], samples: int, seed: int) -> dict[int, float]:
    return {t: accuracy(model, t, samples, seed + t) for t in lengths}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = TrainConfig()
    p.add_argument("--model", choices=["lstm", "rnn"], default=d.model)
    p.add_argument("--length", type=int, help="train one length T only (sets --min-length and --max-length)")
    p.add_argument("--min-length", type=int, default=d.min_length)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument(
        "--encoding", choices=["scalar", "onehot"], default=d.encoding, help="how a digit enters the network"
    )
    p.add_argument("--hidden-dim", type=int, default=d.hidden_dim)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=d.lr_schedule)
    p.add_argument("--clip", type=float, default=d.clip, help="max gradient norm")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument(
        "--curriculum-steps",
        type=int,
        default=d.curriculum_steps,
        help="grow the longest trained length from --min-length to --max-length over these steps",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-samples", type=int, default=d.eval_samples)
    p.add_argument("--final-samples", type=int, default=10_000, help="fresh palindromes per length in the final report")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path("weights/palindrome_lstm.pt"))
    p.add_argument("--dry-run", action="store_true", help="a few steps on tiny batches, nothing written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[int, float]:
    args = parse_args(argv)
    if args.length is not None:
        args.min_length = args.max_length = args.length
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dry_run:
        args.steps, args.batch_size, args.eval_every, args.eval_samples, args.final_samples = 3, 8, 2, 20, 20
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    device = pick_device(args.device)
    model, history = train(cfg, device)
    lengths = range(cfg.min_length, cfg.max_length + 1)
    per_length = accuracy_per_length(model, lengths, args.final_samples, cfg.seed + FINAL_SEED_OFFSET)
    for t, acc in per_length.items():
        print(f"T={t:3d}  accuracy {acc:.5f}  ({args.final_samples} fresh palindromes)")
    if not args.dry_run:
        meta = {
            "min_length": cfg.min_length,
            "max_length": cfg.max_length,
            "train": asdict(cfg),
            "accuracy": {str(t): a for t, a in per_length.items()},
            "history": history,
        }
        print(f"saved {save_checkpoint(args.out, model, meta)}")
    return per_length


if __name__ == "__main__":
    main()
