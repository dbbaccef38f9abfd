"""Train the MNIST CNN that scores generators (classifier-space FID, IS, class histogram).

    python -m training.classifier --data-dir ../shared/data --epochs 6 --seed 0 --threads 1 --out weights/classifier.pt

The checkpoint records its test accuracy in `meta`; the instrument is only trusted at >= 99 %.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from digitlab.checkpoint import save_checkpoint
from digitlab.device import pick_device
from digitlab.mnist import DEFAULT_DATA_DIR, load_mnist
from digitlab.networks import ClassifierConfig, MnistClassifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="torchvision MNIST root (downloaded when missing)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--gamma", type=float, default=0.7, help="learning-rate decay per epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help='"auto" picks CUDA, then MPS, then CPU')
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--dry-run", action="store_true", help="one batch of training and evaluation; writes nothing")
    p.add_argument("--out", default="weights/classifier.pt")
    return p.parse_args(argv)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int | None = None) -> float:
    """Top-1 accuracy of `model` (eval mode) over `loader`."""
    model.eval()
    correct = total = 0
    for k, (images, labels) in enumerate(loader):
        if max_batches is not None and k >= max_batches:
            break
        correct += (model(images.to(device)).argmax(1) == labels.to(device)).sum().item()
        total += len(labels)
    return correct / total


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    train = load_mnist(args.data_dir, train=True, limit=args.limit)
    test = load_mnist(args.data_dir, train=False, limit=args.limit)
    train_loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    test_loader = DataLoader(test, batch_size=1000)

    model = MnistClassifier(ClassifierConfig()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=args.gamma)
    loss_fn = nn.CrossEntropyLoss()
    start = time.process_time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for images, labels in bar:
            loss = loss_fn(model(images.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if args.dry_run:
                break
        scheduler.step()
        accuracy = evaluate(model, test_loader, device, max_batches=1 if args.dry_run else None)
        print(f"epoch {epoch}: test accuracy {accuracy:.4%}")
        if args.dry_run:
            return accuracy
    cpu_s = time.process_time() - start
    meta = {
        "test_accuracy": accuracy,
        "epochs": args.epochs,
        "seed": args.seed,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "train_images": len(train),
        "test_images": len(test),
        "cpu_seconds": cpu_s,
    }
    save_checkpoint(args.out, model, meta)
    print(f"saved {args.out}: test accuracy {accuracy:.4%} on {len(test)} images, {cpu_s:.0f} CPU s")
    return accuracy


if __name__ == "__main__":
    main()
