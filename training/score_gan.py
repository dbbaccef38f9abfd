"""Score a generator checkpoint with the MNIST classifier: classifier-space FID, Inception Score, KL to uniform.

    python -m training.score_gan weights/generator.pt --classifier weights/classifier.pt --n 10000 \
        --data-dir ../shared/data

Also prints the same scores for n real training images (the best a generator can hope for: FID
floor, IS ceiling), so every number has its reference next to it.
"""

from __future__ import annotations

import argparse
import json

import torch

from digitlab.checkpoint import load_model, read_checkpoint, save_checkpoint
from digitlab.device import pick_device
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist
from digitlab.scores import real_stats, score_generator, score_images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("generator", help="generator checkpoint (digitlab.checkpoint format)")
    p.add_argument("--classifier", default="weights/classifier.pt")
    p.add_argument("--n", type=int, default=10_000, help="samples to score (latent ids seed, 0..n-1)")
    p.add_argument("--seed", type=int, default=1, help="latent seed of the scored samples")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--record", action="store_true", help="also store the generator's scores in its checkpoint meta")
    p.add_argument("--dry-run", action="store_true", help="score 100 samples only; records nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 100 if args.dry_run else args.n
    device = pick_device(args.device)
    classifier = load_model(args.classifier, device, expect="classifier")
    generator = load_model(args.generator, device, expect="generator")
    reference = real_stats(classifier, load_mnist(args.data_dir, train=False).tensors[0])  # the test set
    results = {
        "generator": score_generator(generator, classifier, reference, n=n, seed=args.seed),
        "real_train_images": score_images(
            classifier, load_mnist(args.data_dir, train=True, limit=n).tensors[0], reference
        ),
    }
    print(json.dumps(results, indent=2))
    if args.record and not args.dry_run:
        meta = read_checkpoint(args.generator)["meta"]
        save_checkpoint(args.generator, generator, {**meta, "scores": {**results["generator"], "seed": args.seed}})
    return results


if __name__ == "__main__":
    main()
