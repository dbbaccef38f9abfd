"""Latent points for the generator: deterministic sampling, interpolation and digit search.

Every function is pure (no global RNG state is read or changed), so training figures, tests and the
serving handler all draw the same latent for the same `(seed, index)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from digitlab.constants import LATENT_DIM, TRUNCATION_OFF

METHODS = ("lerp", "slerp")
# The truncation trick, two ways to keep latents near the centre of the Gaussian, where the generator saw
# most of its training latents (docs/GAN.md measures both):
# - "scale":    z -> psi * z, every latent pulled toward the mean (0) by the same factor;
# - "resample": each component outside the bound b with P(|N(0,1)| <= b) = psi is drawn again from the same
#               id's stream until it falls inside (BigGAN's form), so psi is the mass of N(0,1) kept.
TRUNCATION_METHODS = ("scale", "resample")
SERVED_TRUNCATION = "scale"  # the one `sample` and `interpolate` apply (docs/GAN.md says why)
MAX_RESAMPLE_ROUNDS = 256  # bounds the work at tiny psi; what is still outside then is clamped to the bound


def truncation_bound(psi: float) -> float:
    """The per-component bound b of "resample": P(|N(0,1)| <= b) = psi, i.e. b = sqrt(2) erfinv(psi)."""
    if not 0 < psi <= TRUNCATION_OFF:
        raise ValueError(f"truncation psi must be in (0, 1], got {psi}")
    return (
        math.inf
        if psi == TRUNCATION_OFF
        else math.sqrt(2) * torch.erfinv(torch.tensor(psi, dtype=torch.float64)).item()
    )


def latent_for(seed: int, index: int, psi: float = TRUNCATION_OFF, method: str = SERVED_TRUNCATION) -> torch.Tensor:
    """The latent with id `(seed, index)`: a standard normal vector (LATENT_DIM,) float32, truncated by `psi`.

    Each id gets its own generator, seeded by hashing both numbers with numpy's SeedSequence, so
    latent `index` does not depend on how many others were drawn with it (batch size, page, order).
    psi = 1 is no truncation: the same numbers bit for bit. Below 1, the id still names one latent per
    (psi, method): "scale" multiplies it, "resample" redraws from the id's own stream.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    if method not in TRUNCATION_METHODS:
        raise ValueError(f"truncation method must be one of {TRUNCATION_METHODS}, got {method!r}")
    bound = truncation_bound(psi)
    state = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
    g = torch.Generator().manual_seed(state)
    z = torch.randn(LATENT_DIM, generator=g)  # (LATENT_DIM,)
    if psi == TRUNCATION_OFF:
        return z
    if method == "scale":
        return z * psi
    for _ in range(MAX_RESAMPLE_ROUNDS):
        outside = z.abs() > bound  # (LATENT_DIM,) bool
        if not outside.any():
            return z
        z[outside] = torch.randn(int(outside.sum()), generator=g)
    return z.clamp_(-bound, bound)


def sample_latents(
    seed: int, n: int, start: int = 0, psi: float = TRUNCATION_OFF, method: str = SERVED_TRUNCATION
) -> torch.Tensor:
    """Latents with ids (seed, start) .. (seed, start + n - 1), truncated by `psi`, stacked: (n, LATENT_DIM)."""
    return torch.stack([latent_for(seed, i, psi, method) for i in range(start, start + n)])


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight line z0 (D,) -> z1 (D,) in `steps` points (steps, D); first is z0, last is z1."""
    t = _fractions(steps, z0).unsqueeze(1)  # (steps, 1)
    return torch.lerp(z0.expand(steps, -1), z1.expand(steps, -1), t)


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int, eps: float = 1e-6) -> torch.Tensor:
    """Great-circle path z0 (D,) -> z1 (D,) in `steps` points (steps, D), radius interpolated linearly.

    A Gaussian latent lives near the sphere of radius sqrt(D); the midpoint of a straight line falls
    inside it (norm shrinks by ~1/sqrt(2) for independent endpoints), where the generator has seen
    few samples. Nearly parallel endpoints fall back to `lerp`, where the angle is too small to divide by.
    """
    t = _fractions(steps, z0).unsqueeze(1)  # (steps, 1)
    n0, n1 = z0.norm(), z1.norm()
    cos = torch.dot(z0 / n0, z1 / n1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < eps or n0 < eps or n1 < eps:
        return lerp(z0, z1, steps)
    direction = (torch.sin((1 - t) * omega) * z0 / n0 + torch.sin(t * omega) * z1 / n1) / torch.sin(omega)
    path = direction * torch.lerp(n0, n1, t)
    path[0], path[-1] = z0, z1  # exact endpoints, free of rounding
    return path


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """`lerp` or `slerp` by name: (D,), (D,) -> (steps, D)."""
    if method == "lerp":
        return lerp(z0, z1, steps)
    if method == "slerp":
        return slerp(z0, z1, steps)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _fractions(steps: int, like: torch.Tensor) -> torch.Tensor:
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    return torch.linspace(0.0, 1.0, steps, dtype=like.dtype, device=like.device)  # (steps,)


class LatentHit(NamedTuple):
    seed: int
    index: int
    z: torch.Tensor  # (LATENT_DIM,)
    confidence: float  # classifier's p(digit | draw(z))
    image: torch.Tensor  # draw(z): (1, 28, 28) on the CPU, as drawing the id (seed, index) again gives it


def device_of(module: Callable[..., torch.Tensor]) -> torch.device:
    """Where a network's weights are (CPU for a callable without any)."""
    parameters = module.parameters() if isinstance(module, nn.Module) else iter(())
    return next((p.device for p in parameters), torch.device("cpu"))


@torch.no_grad()
def find_latents_for_digit(
    draw: Callable[[torch.Tensor], torch.Tensor],
    classifier: nn.Module,
    digit: int,
    n: int,
    seed: int,
    budget: int,
    min_confidence: float,
    batch_size: int = 256,
    psi: float = TRUNCATION_OFF,
    first_chunk: int | None = None,
) -> list[LatentHit]:
    """The first n latent ids (seed, index < budget) whose drawings the classifier reads as `digit` with
    p >= min_confidence, the latents truncated by `psi` (as `latent_for` draws them).

    `draw` turns latents (b, 100) into images (b, 1, 28, 28): the report's generator itself, or a conditional
    generator told the digit. Ids are scanned in order, `first_chunk` (default `batch_size`) and then
    `batch_size` at a time, one draw and one classifier forward per chunk, so the same models and seed give
    the same hits whatever the chunking, and the work is bounded by `budget`. A drawer that is usually right
    wants a first chunk just above n; a search among every digit, a large one. Both networks in eval mode
    (BatchNorm running stats), which keeps each sample independent of its chunk. Raises LookupError when
    fewer than n ids within `budget` are confident enough.
    """
    device = device_of(draw)
    hits: list[LatentHit] = []
    start, size = 0, first_chunk or batch_size
    while start < budget:
        z = sample_latents(seed, min(size, budget - start), start, psi).to(device)  # (b, D)
        images = draw(z)  # (b, 1, 28, 28)
        probs = classifier(images.to(device_of(classifier))).softmax(dim=1)[:, digit]  # (b,)
        for k in (probs >= min_confidence).nonzero().flatten().tolist():
            hits.append(LatentHit(seed, start + k, z[k].cpu(), float(probs[k]), images[k].cpu()))
            if len(hits) == n:
                return hits
        start, size = start + len(z), batch_size
    raise LookupError(
        f"{len(hits)} of {n} latents in seed {seed}, indices < {budget}, are read as {digit} with p >= {min_confidence}"
    )


def find_latent_for_digit(
    draw: Callable[[torch.Tensor], torch.Tensor],
    classifier: nn.Module,
    digit: int,
    seed: int,
    budget: int,
    min_confidence: float,
    batch_size: int = 256,
    psi: float = TRUNCATION_OFF,
    first_chunk: int | None = None,
) -> LatentHit:
    """The first latent id (seed, index < budget) whose drawing the classifier reads as `digit` (see above)."""
    return find_latents_for_digit(
        draw, classifier, digit, 1, seed, budget, min_confidence, batch_size, psi, first_chunk
    )[0]
