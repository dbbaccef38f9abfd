"""MNIST as tensors in the generator's range [-1, 1], read through torchvision's standard dataset.

The whole split is decoded once into one tensor (60,000 x 1 x 28 x 28 float32 = 188 MB): on a CPU a
per-item PIL transform costs more than the small GAN step itself. The scaling equals torchvision's
`ToTensor()` followed by `Normalize((MNIST_MEAN,), (MNIST_STD,))`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST

from digitlab.constants import IMAGE_SIZE, MNIST_MEAN, MNIST_STD

DEFAULT_DATA_DIR = "data"


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) in [0, 255] -> float32 (N, 1, 28, 28) in [-1, 1]."""
    return ((pixels.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def load_mnist(data_dir: str | Path = DEFAULT_DATA_DIR, train: bool = True, limit: int | None = None) -> TensorDataset:
    """The MNIST split under `data_dir/MNIST/raw` as (images (N, 1, 28, 28) in [-1, 1], labels (N,) int64).

    torchvision downloads (and checksums) the files when they are missing and returns early when the
    uncompressed IDX files are present, so a read-only copy such as ../shared/data is read in place.
    `limit` keeps the first N examples (smoke runs).
    """
    dataset = MNIST(root=str(data_dir), train=train, download=True)
    images, labels = dataset.data[:limit], dataset.targets[:limit]
    return TensorDataset(normalise(images), labels)


def write_fake_mnist(data_dir: str | Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Write tiny random MNIST-format IDX files under `data_dir/MNIST/raw`, so tests need no real data.

    Each fake digit is a bright square at a position given by its label, so a classifier can learn it.
    """
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, IMAGE_SIZE, IMAGE_SIZE)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = 2 + 8 * (label // 4), 2 + 6 * (label % 4)
            images[i, row : row + 6, col : col + 6] = 255
        # IDX: big-endian magic (0x0803 images / 0x0801 labels), then dimensions, then raw bytes.
        _write_idx(raw / f"{split}-images-idx3-ubyte", 2051, images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", 2049, labels)
    return Path(data_dir)


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.tobytes())
