"""Pick the generator to ship from a run's scored checkpoints: every target met, then the highest IS.

    python -m training.select_gan runs/gan-shipped --out runs/gan-shipped/selected.pt

Reads the periodic scores each checkpoint carries (`training.gan --keep-scored`: checkpoints/iter_*.pt, scored
on --score-n samples) and keeps those that meet every target: FID at most --max-fid, KL to uniform at most
--max-kl, every digit's share within [--min-share, --max-share]. Among them the one with the highest IS
is copied to --out; the table of all checkpoints is printed with the ones that qualify marked. Exits 1
when none qualifies (and copies nothing). The copy is then scored on 10,000 samples by
`training.score_gan`, whose numbers are the ones the docs give.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from digitlab.checkpoint import read_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("run", type=Path, help="a training.gan --out-dir run with --keep-scored checkpoints")
    p.add_argument("--out", type=Path, help="where to copy the selected checkpoint (default: RUN/selected.pt)")
    p.add_argument("--max-fid", type=float, default=14.2)
    p.add_argument("--max-kl", type=float, default=0.008)
    p.add_argument("--min-share", type=float, default=0.085, help="lowest share of any digit")
    p.add_argument("--max-share", type=float, default=0.115, help="highest share of any digit")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Targets:
    """What a checkpoint must meet to ship (the command's --max-fid, --max-kl, --min-share, --max-share)."""

    max_fid: float
    max_kl: float
    min_share: float
    max_share: float


def qualifies(meta: dict, targets: Targets) -> bool:
    shares = meta["histogram"]
    return (
        meta["fid"] <= targets.max_fid
        and meta["kl_uniform"] <= targets.max_kl
        and targets.min_share <= min(shares)
        and max(shares) <= targets.max_share
    )


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    targets = Targets(args.max_fid, args.max_kl, args.min_share, args.max_share)
    scored = [(path, read_checkpoint(path)["meta"]) for path in sorted((args.run / "checkpoints").glob("iter_*.pt"))]
    if not scored:
        raise SystemExit(f"no scored checkpoints in {args.run / 'checkpoints'}: train with --keep-scored")
    print("| iteration | FID | IS | KL | lowest digit | highest digit | meets every target |")
    print("|---:|---:|---:|---:|---:|---:|:-:|")
    for _, meta in scored:
        shares = meta["histogram"]
        print(
            f"| {meta['iteration']} | {meta['fid']:.2f} | {meta['inception_score']:.3f} | {meta['kl_uniform']:.4f} | "
            f"{100 * min(shares):.1f} % | {100 * max(shares):.1f} % | {'yes' if qualifies(meta, targets) else ''} |"
        )
    candidates = [(meta["inception_score"], path) for path, meta in scored if qualifies(meta, targets)]
    if not candidates:
        print("no checkpoint meets every target", file=sys.stderr)
        sys.exit(1)
    best = max(candidates)[1]
    out = args.out or args.run / "selected.pt"
    shutil.copy2(best, out)
    print(f"selected {best.name} (IS {max(candidates)[0]:.3f}) -> {out}")
    return out


if __name__ == "__main__":
    main()
