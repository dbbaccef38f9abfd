"""Turning frames and samples received from the server into files. Pillow only (no numpy, no torch)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any

from PIL import Image


def decode_png(b64: str) -> Image.Image:
    """base64 PNG text -> a grayscale PIL image (`.size` is (width, height))."""
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()  # decode now: a broken PNG raises here, not later
    return image.convert("L")


def _png(frame: Any) -> str:
    return frame["png"] if isinstance(frame, dict) else frame.png


def frames_file(frames: Iterable[Any], gif: bool, duration_ms: int = 120, upscale: int = 4) -> bytes:
    """Received frames (dicts with "png", or `Frame`s) -> a looping animated GIF, each frame `upscale`x
    larger, or one PNG strip left to right."""
    pictures = [decode_png(_png(f)) for f in frames]
    if not pictures:
        raise ValueError("no frames")
    buffer = io.BytesIO()
    if gif:
        big = [p.resize((p.width * upscale, p.height * upscale), Image.NEAREST) for p in pictures]
        big[0].save(buffer, format="GIF", save_all=True, append_images=big[1:], duration=duration_ms, loop=0)
    else:
        strip = Image.new("L", (sum(p.width for p in pictures), max(p.height for p in pictures)))
        x = 0
        for p in pictures:
            strip.paste(p, (x, 0))
            x += p.width
        strip.save(buffer, format="PNG")
    return buffer.getvalue()
