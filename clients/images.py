"""Turning frames and samples received from the server into files."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable

import numpy as np
from PIL import Image

from digitlab.imaging import gif_bytes, png_bytes


def decode_png(b64: str) -> np.ndarray:
    """base64 PNG text -> np.uint8 (H, W)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"))


def frames_file(frames: Iterable[dict], gif: bool, duration_ms: int = 120) -> bytes:
    """Received frames (dicts with "png") -> an animated GIF, or one PNG strip left to right."""
    pixels = np.stack([decode_png(f["png"]) for f in frames])  # (T, H, W)
    return gif_bytes(pixels, duration_ms) if gif else png_bytes(np.concatenate(list(pixels), axis=1))
