"""Train the judge: an MNIST reader independent of the product's classifier, to measure digit requests.

    python -m training.judge --data-dir ../shared/data --epochs 10 --seed 1 --threads 1 --out weights/judge.pt

The serving path finds and labels digits with `weights/classifier.pt`; a generator can learn to please that
one classifier without drawing digits a person reads. The judge shares neither its architecture
(`digitlab.networks.JudgeNet`, LeNet-5's shape) nor its recipe (SGD with momentum, every batch randomly
shifted and rotated, a different seed), and no archive carries it. Its `meta` records its test accuracy and
the share of real test digits it reads correctly with p >= 0.99: the most a generator can score on it.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from tqdm import tqdm

from digitlab.checkpoint import save_checkpoint
from digitlab.device import pick_device
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist
from digitlab.networks import JudgeConfig, JudgeNet
from digitlab.scores import FIDELITY_CONFIDENCE, classify_logits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate, cosine-annealed to 0")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--shift", type=float, default=2.0, help="largest random shift, in pixels")
    p.add_argument("--rotate", type=float, default=10.0, help="largest random rotation, in degrees")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--dry-run", action="store_true", help="one batch of training and evaluation; writes nothing")
    p.add_argument("--out", default="weights/judge.pt")
    return p.parse_args(argv)


def jitter(images: torch.Tensor, shift: float, rotate: float, generator: torch.Generator) -> torch.Tensor:
    """Each image (B, 1, 28, 28) moved by up to `shift` pixels and turned by up to `rotate` degrees.

    One affine grid for the whole batch; the background (-1 in [-1, 1]) fills what moves in from the edges.
    """
    b = len(images)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rotate)  # (B,)
    offset = (torch.rand(b, 2, generator=generator) * 2 - 1) * shift * 2 / images.shape[-1]  # (B, 2) in grid units
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # (B, 28, 28, 2)
    return nn.functional.grid_sample(images + 1, grid, align_corners=False) - 1  # zero padding = background


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Test accuracy, and the share read correctly with p >= FIDELITY_CONFIDENCE (the judge's own ceiling)."""
    model.eval()
    probs = classify_logits(model, images).softmax(dim=1)  # (N, 10)
    right = probs.argmax(dim=1) == labels
    confident = probs[torch.arange(len(labels)), labels] >= FIDELITY_CONFIDENCE
    return {"test_accuracy": float(right.double().mean()), "confident_share": float(confident.double().mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    train_images, train_labels = load_mnist(args.data_dir, train=True, limit=args.limit).tensors
    test_images, test_labels = load_mnist(args.data_dir, train=False, limit=args.limit).tensors
    model = JudgeNet(JudgeConfig()).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, nesterov=True
    )
    per_epoch = max(1, len(train_images) // args.batch_size)
    steps = 1 if args.dry_run else args.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    g = torch.Generator().manual_seed(args.seed)
    start = time.process_time()
    bar = tqdm(range(steps), desc="judge", unit="batch")
    for step in bar:
        if step % per_epoch == 0:
            order = torch.randperm(len(train_images), generator=g)
        rows = order[(step % per_epoch) * args.batch_size : (step % per_epoch + 1) * args.batch_size]
        images = jitter(train_images[rows], args.shift, args.rotate, g).to(device)  # (B, 1, 28, 28)
        model.train()
        loss = nn.functional.cross_entropy(model(images), train_labels[rows].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    scores = evaluate(model, test_images, test_labels.to(device))
    print(
        f"test accuracy {scores['test_accuracy']:.2%}; read right with p >= {FIDELITY_CONFIDENCE}: "
        f"{scores['confident_share']:.2%} of {len(test_images)} real test digits"
    )
    if args.dry_run:
        return scores
    meta = {
        **scores,
        "epochs": args.epochs,
        "seed": args.seed,
        "lr": args.lr,
        "momentum": args.momentum,
        "shift": args.shift,
        "rotate": args.rotate,
        "batch_size": args.batch_size,
        "train_images": len(train_images),
        "test_images": len(test_images),
        "cpu_seconds": time.process_time() - start,
    }
    save_checkpoint(args.out, model, meta)
    print(f"saved {args.out}")
    return scores


if __name__ == "__main__":
    main()
