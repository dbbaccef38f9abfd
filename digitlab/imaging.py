"""Image encoding for generator output: uint8 arrays, PNG, grids, strips and GIFs. Pure functions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from digitlab.constants import MNIST_MEAN, MNIST_STD


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output (B, 1, H, W) in [-1, 1] -> np.uint8 (B, H, W) in [0, 255].

    Undoes the training normalisation x' = (x - mean) / std, so a real MNIST image round-trips.
    """
    pixels = images.detach().cpu().float() * MNIST_STD + MNIST_MEAN  # (B, 1, H, W) in [0, 1]
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """One grayscale image np.uint8 (H, W) -> PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Images (B, 1, H, W) in [-1, 1] -> one np.uint8 (H', W') mosaic, `nrow` images per row."""
    # make_grid pads with 0, which after to_uint8 is mid-grey; pad with -1 (black) like the digits' ground.
    mosaic = make_grid(images.detach().cpu(), nrow=nrow, padding=padding, pad_value=-1.0)  # (3, H', W')
    return to_uint8(mosaic[:1].unsqueeze(0))[0]


def grid_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    """Images (B, 1, H, W) in [-1, 1] -> PNG bytes of their grid."""
    return png_bytes(grid(images, nrow))


def strip_png(images: torch.Tensor) -> bytes:
    """Frames (T, 1, H, W) in [-1, 1] -> PNG bytes of one row: an interpolation strip."""
    return grid_png(images, nrow=len(images))


def gif_bytes(frames: np.ndarray, duration_ms: int = 100, upscale: int = 4) -> bytes:
    """np.uint8 frames (T, H, W) -> looping animated GIF bytes, each frame `upscale`x larger."""
    pictures = [Image.fromarray(f).resize((f.shape[1] * upscale, f.shape[0] * upscale), Image.NEAREST) for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
