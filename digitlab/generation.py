"""Serving the generator as plain functions: images from latents, and their encodings as answers.

The generator services (digitlab.generator_service) hold the steps of each endpoint; these take and return
tensors and schema objects only.
"""

from __future__ import annotations

import base64
import time

import torch
from torch import nn

from digitlab.imaging import png_bytes, to_uint8
from digitlab.latent import device_of
from digitlab.schemas import Frame, ImageOut, LatentId, SampleResponse

# A forward of fewer rows than this takes another matrix-multiply path on the CPU (BLAS's small-matrix kernels),
# whose float rounding differs in the last bits, enough to move a pixel by one level. Padding every forward to
# at least this many rows keeps an image a function of its id alone, bit for bit, whatever batch it is drawn in
# (one thread, as workers run; tests/unit/test_generation.py checks it).
MIN_ROWS = 16


@torch.inference_mode()
def generate(generator: nn.Module, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
    """Latents (B, 100) on any device -> images (B, 1, 28, 28) in [-1, 1] on the CPU. `generator` in eval mode;
    a conditional one also takes `digits`: labels (B,) or per-class weights (B, 10)."""
    device = device_of(generator)
    rows = len(z)
    pad = max(0, MIN_ROWS - rows)
    z = torch.cat([z.to(device), z.new_zeros(pad, z.shape[1], device=device)])  # (max(B, 16), 100)
    if digits is None:
        return generator(z)[:rows].cpu()
    digits = torch.cat([digits.to(device), digits.new_zeros(pad, *digits.shape[1:], device=device)])
    return generator(z, digits)[:rows].cpu()


def b64_png(image) -> str:
    """np.uint8 (28, 28) -> base64 text of its PNG."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def sample_response(
    seed: int, images: torch.Tensor, raw: bool, indices: list[int] | None = None, digit: int | None = None
) -> SampleResponse:
    """Images (n, 1, 28, 28) drawn from ids (seed, indices), by default 0..n-1 -> their JSON answer (PNG or raw
    pixels). `digit`: the images were drawn by the digit generator asked for that digit, which each id then names."""
    pixels = to_uint8(images)  # (n, 28, 28)
    out = [
        ImageOut(
            id=LatentId(seed=seed, index=i, digit=digit),
            **({"pixels": p.tolist()} if raw else {"png": b64_png(p)}),
        )
        for i, p in zip(indices or range(len(pixels)), pixels)
    ]
    return SampleResponse(seed=seed, images=out)


@torch.inference_mode()
def frames(images: torch.Tensor, classifier: nn.Module, first_index: int, total: int) -> list[Frame]:
    """Images (k, 1, 28, 28) -> frames first_index.. of `total`, each with what the classifier reads in it."""
    probs = classifier(images.to(device_of(classifier))).softmax(dim=1).cpu()  # (k, 10)
    confidence, digit = probs.max(dim=1)
    now = time.time()
    return [
        Frame(
            index=first_index + k,
            of=total,
            png=b64_png(p),
            digit=int(d),
            confidence=round(float(c), 4),
            generated_at=now,
        )
        for k, (p, d, c) in enumerate(zip(to_uint8(images), digit, confidence))
    ]
