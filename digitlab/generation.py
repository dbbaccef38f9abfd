"""Serving the generator as plain functions: latents for a request, images, and their encodings.

The handler is a thin adapter over these; they take and return tensors and schema objects only.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import torch
from torch import nn

from digitlab.constants import TRUNCATION_OFF
from digitlab.imaging import png_bytes, to_uint8
from digitlab.latent import find_latent_for_digit, find_latents_for_digit, interpolate, latent_for
from digitlab.schemas import (
    DigitPoint,
    ExplicitLatent,
    Frame,
    ImageOut,
    InterpolateRequest,
    InvalidRequest,
    LatentId,
    Point,
    SampleResponse,
)


@dataclass(frozen=True)
class DigitSearch:
    """How hard to look for latents of a requested digit (model config: handler.digit_search_*)."""

    budget: int = 4096  # latent ids tried at most per request: bounds the work one request can cause
    min_confidence: float = 0.9


@torch.inference_mode()
def generate(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Latents (B, 100) on any device -> images (B, 1, 28, 28) in [-1, 1] on the CPU. `generator` in eval mode."""
    device = next(generator.parameters()).device
    return generator(z.to(device)).cpu()


def b64_png(image) -> str:
    """np.uint8 (28, 28) -> base64 text of its PNG."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def sample_response(seed: int, images: torch.Tensor, raw: bool, indices: list[int] | None = None) -> SampleResponse:
    """Images (n, 1, 28, 28) drawn from ids (seed, indices), by default 0..n-1 -> their JSON answer
    (PNG or raw pixels)."""
    pixels = to_uint8(images)  # (n, 28, 28)
    out = [
        ImageOut(id=LatentId(seed=seed, index=i), **({"pixels": p.tolist()} if raw else {"png": b64_png(p)}))
        for i, p in zip(indices or range(len(pixels)), pixels)
    ]
    return SampleResponse(seed=seed, images=out)


def digit_samples(
    generator: nn.Module,
    classifier: nn.Module,
    digit: int,
    n: int,
    seed: int,
    search: DigitSearch,
    psi: float = TRUNCATION_OFF,
) -> tuple[list[int], torch.Tensor]:
    """The first n ids (seed, index) whose samples (latents truncated by `psi`) the classifier reads as `digit`
    with confidence >= search.min_confidence -> (their indices, their images (n, 1, 28, 28)). A budget spent
    first is a 422."""
    try:
        hits = find_latents_for_digit(
            generator, classifier, digit, n, seed, search.budget, search.min_confidence, psi=psi
        )
    except LookupError:
        raise InvalidRequest(
            f"fewer than {n} of the {search.budget} latents of seed {seed} are read as a {digit} with confidence "
            f">= {search.min_confidence}: ask for fewer images or try another seed",
            status=422,
        ) from None
    return [h.index for h in hits], torch.stack([h.image for h in hits])


def resolve(
    point: Point, generator: nn.Module, classifier: nn.Module, search: DigitSearch, psi: float = TRUNCATION_OFF
) -> torch.Tensor:
    """A request's point -> its latent (100,), truncated by `psi` when drawn by id or found by digit (an explicit
    z is the caller's own). A digit nobody can find is the client's 422, not a crash."""
    if isinstance(point, LatentId):
        return latent_for(point.seed, point.index, psi)
    if isinstance(point, ExplicitLatent):
        return torch.tensor(point.z, dtype=torch.float32)
    assert isinstance(point, DigitPoint)
    try:
        return find_latent_for_digit(
            generator, classifier, point.digit, point.seed, search.budget, search.min_confidence, psi=psi
        ).z
    except LookupError:
        raise InvalidRequest(
            f"no latent within {search.budget} tries of seed {point.seed} is read as a {point.digit} with "
            f'confidence >= {search.min_confidence}: try another seed, or give the point as {{"seed", "index"}}',
            status=422,
        ) from None


def interpolation_latents(
    request: InterpolateRequest, generator: nn.Module, classifier: nn.Module, search: DigitSearch
) -> torch.Tensor:
    """The request's path through latent space: (steps, 100), first and last rows exactly its endpoints."""
    z0 = resolve(request.start, generator, classifier, search, request.truncation)
    z1 = resolve(request.end, generator, classifier, search, request.truncation)
    return interpolate(z0, z1, request.steps, request.method)


@torch.inference_mode()
def frames(images: torch.Tensor, classifier: nn.Module, first_index: int, total: int) -> list[Frame]:
    """Images (k, 1, 28, 28) -> frames first_index.. of `total`, each with what the classifier reads in it."""
    device = next(classifier.parameters()).device
    probs = classifier(images.to(device)).softmax(dim=1).cpu()  # (k, 10)
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
