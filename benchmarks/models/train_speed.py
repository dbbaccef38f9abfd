"""Training throughput of the fused nn.LSTM (or nn.RNN) against the report's per-step cell loop, side by side.

    python -m benchmarks.models.train_speed --lengths 15 50 --steps 50 --repeats 5 --threads 1

Both variants train the same network (same weights, batch, Adam, gradient clipping) and differ only in
the forward: `PalindromeNet` calls fused `nn.LSTM`; `reference_forward` runs the report's equations one
time step at a time in Python. Each repetition times both in turn (alternating, so drift on a noisy
machine hits both); the table gives medians and the fused / loop ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from benchmarks.shared.pages import markdown_table
from digitlab.networks import PalindromeConfig, PalindromeNet, reference_forward
from digitlab.palindrome import palindrome_batch
from training.palindrome import TrainConfig

VARIANTS = {"fused": PalindromeNet.__call__, "per-step loop": reference_forward}  # each: (net, digits) -> logits


def steps_per_second(forward, net: PalindromeNet, cfg: TrainConfig, inputs, targets, steps: int, warmup: int) -> float:
    """Full training steps (forward, backward, clip, Adam) per second on one fixed batch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss = nn.functional.cross_entropy(forward(net, inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=["lstm", "rnn"], default="lstm")
    p.add_argument("--lengths", type=int, nargs="+", default=[15, 50], help="palindrome lengths T to time")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per variant and repetition")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, Adam state)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="one short repetition, for a smoke test")
    args = p.parse_args(argv)
    if args.dry_run:
        args.lengths, args.steps, args.warmup, args.repeats = args.lengths[:1], 2, 1, 1
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model)  # the report's hidden size, batch, lr and clip
    config = PalindromeConfig(cell=cfg.model, hidden_dim=cfg.hidden_dim, encoding=cfg.encoding)
    medians: dict[int, dict[str, float]] = {}
    for length in args.lengths:
        torch.manual_seed(args.seed)
        initial = PalindromeNet(config).state_dict()
        inputs, targets = palindrome_batch(cfg.batch_size, length, torch.Generator().manual_seed(args.seed))
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant, forward in VARIANTS.items():
                net = PalindromeNet(config)
                net.load_state_dict(initial)  # both variants start from the same weights
                results[variant].append(steps_per_second(forward, net, cfg, inputs, targets, args.steps, args.warmup))
        medians[length] = {v: statistics.median(r) for v, r in results.items()}
        print(f"T={length}: " + ", ".join(f"{v} {s:.1f} steps/s" for v, s in medians[length].items()), flush=True)
    fused, loop = VARIANTS
    print(
        f"\n{args.model.upper()}, batch {cfg.batch_size}, hidden {cfg.hidden_dim}, {args.threads} thread(s), "
        f"medians of {args.repeats} x {args.steps} steps:"
    )
    cells = [
        [length, f"{m[fused]:.1f}", f"{m[loop]:.1f}", f"{m[fused] / m[loop]:.2f}x"] for length, m in medians.items()
    ]
    print(markdown_table(["T", f"{fused} steps/s", f"{loop} steps/s", "ratio"], cells))
    return medians


if __name__ == "__main__":
    main()
