"""The real digits a GAN run trains on, in an order that a resumed run repeats exactly."""

from __future__ import annotations

import torch


class RealBatches:
    """Real images (N, 1, 28, 28) and their labels (N,) served as batches in a reproducible order.

    Epoch e's order is a permutation seeded by (seed, e) and the incomplete last batch is dropped,
    so the k-th batch is a function of k alone and a resumed run sees the same data as an unbroken one.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        self.per_epoch = len(images) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
        self.epoch, self.order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k-th batch: images (batch, 1, 28, 28), labels (batch,)."""
        epoch, offset = divmod(k, self.per_epoch)
        if epoch != self.epoch:  # one permutation per epoch, drawn from its own generator
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.epoch, self.order = epoch, torch.randperm(len(self.images), generator=g)
        rows = self.order[offset * self.batch_size : (offset + 1) * self.batch_size]
        return self.images[rows], self.labels[rows]
