"""Scoring generators with the MNIST classifier: classifier-space FID, Inception Score, class histogram.

The classifier plays the role Inception-v3 plays for natural images: FID is the Fréchet distance
between Gaussians fitted to its penultimate features (128-d) of generated and real test images, IS
uses its class posteriors. Numbers are comparable only between runs scored with the same classifier.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from digitlab.constants import NUM_CLASSES, TRUNCATION_OFF
from digitlab.latent import SERVED_TRUNCATION, sample_latents


class FeatureStats(NamedTuple):
    mean: np.ndarray  # (F,) float64
    cov: np.ndarray  # (F, F) float64


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) in [-1, 1] -> (class probabilities (N, 10), penultimate features (N, F)) on CPU."""
    device = next(classifier.parameters()).device
    probs, feats = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.to(device))  # (b, F)
        feats.append(f.cpu())
        probs.append(classifier.head(f).softmax(dim=1).cpu())  # eval mode: dropout is the identity
    return torch.cat(probs), torch.cat(feats)


@torch.no_grad()
def classify_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Any classifier's logits (N, 10) for images (N, 1, 28, 28) in [-1, 1], chunk by chunk, on CPU."""
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device)).cpu() for chunk in images.split(batch_size)])


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Features (N, F) -> their mean (F,) and covariance (F, F), in float64 for the matrix square root."""
    x = features.double().numpy()
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians.

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S_a^(1/2) S_b S_a^(1/2), which has the same spectrum and, unlike scipy's general
    sqrtm, never returns complex parts from rounding.
    """
    root_a = _psd_sqrt(a.cov)
    cross = np.linalg.eigvalsh(root_a @ b.cov @ root_a).clip(min=0)
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.sqrt(cross).sum())


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def inception_score(probs: torch.Tensor) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) for probs (N, 10): 1 (no information) to 10 (confident and balanced).

    One split over all N samples (the original's 10-split average only adds a spread).
    """
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(dim=0, keepdim=True)  # (1, 10)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(dim=1).mean()))


def class_histogram(probs: torch.Tensor) -> np.ndarray:
    """Fraction of samples assigned to each class by argmax: probs (N, 10) -> (10,) summing to 1."""
    counts = torch.bincount(probs.argmax(dim=1), minlength=NUM_CLASSES).double()
    return (counts / counts.sum()).numpy()


def kl_to_uniform(histogram: np.ndarray) -> float:
    """KL(h || uniform) = sum h log(10 h), 0 log 0 = 0: 0 when every digit is equally frequent, log 10 for one digit."""
    h = histogram[histogram > 0]
    return float((h * np.log(len(histogram) * h)).sum())


def score_images(classifier: nn.Module, images: torch.Tensor, real: FeatureStats) -> dict[str, float | list[float]]:
    """Scores of images (N, 1, 28, 28) in [-1, 1] against the real test set's feature statistics."""
    probs, feats = classify(classifier, images)
    histogram = class_histogram(probs)
    return {
        "fid": frechet_distance(feature_stats(feats), real),
        "inception_score": inception_score(probs),
        "kl_uniform": kl_to_uniform(histogram),
        "histogram": [round(float(h), 4) for h in histogram],
        # How sure the classifier is of each sample's digit, on average: how clean the digits are, whatever
        # their balance (IS mixes the two).
        "confidence": float(probs.max(dim=1).values.double().mean()),
        "n": len(images),
    }


def real_stats(classifier: nn.Module, images: torch.Tensor) -> FeatureStats:
    """Feature statistics of real images (N, 1, 28, 28): the reference every generator is compared to."""
    return feature_stats(classify(classifier, images)[1])


@torch.no_grad()
def sample_images(
    generator: nn.Module,
    n: int,
    seed: int,
    batch_size: int = 1000,
    psi: float = TRUNCATION_OFF,
    method: str = SERVED_TRUNCATION,
) -> torch.Tensor:
    """n samples (n, 1, 28, 28) of latent ids (seed, 0..n-1) truncated by `psi`, on CPU. The generator's mode
    is the caller's."""
    device = next(generator.parameters()).device
    z = sample_latents(seed, n, psi=psi, method=method)  # (n, LATENT_DIM)
    digits = requested_digits(generator, n)  # (n,) or None
    images = []
    for k in range(0, n, batch_size):
        asked = None if digits is None else digits[k : k + batch_size].to(device)
        images.append(generator(z[k : k + batch_size].to(device), asked).cpu())
    return torch.cat(images)


def requested_digits(generator: nn.Module, n: int) -> torch.Tensor | None:
    """What a scored sample of n asks a conditional generator for: 0..9 in turn (n,), so every digit gets
    its share; None for the report's generator, which is asked for nothing."""
    return torch.arange(n) % NUM_CLASSES if getattr(generator, "conditional", False) else None


FIDELITY_CONFIDENCE = 0.99  # a digit is "read as asked" when the classifier gives the asked digit p >= this


def fidelity(
    classifier: nn.Module, images: torch.Tensor, digits: torch.Tensor, threshold: float = FIDELITY_CONFIDENCE
) -> float:
    """Fraction of images (N, 1, 28, 28) that `classifier` reads as their digit (N,) with p >= threshold."""
    probs, _ = classify(classifier, images)
    return float((probs[torch.arange(len(digits)), digits] >= threshold).double().mean())


def score_generator(
    generator: nn.Module,
    classifier: nn.Module,
    real: FeatureStats,
    n: int = 10_000,
    seed: int = 1,
    psi: float = TRUNCATION_OFF,
    method: str = SERVED_TRUNCATION,
) -> dict[str, float | list[float]]:
    """Scores of n eval-mode samples (BatchNorm running statistics, as served); restores the generator's mode."""
    was_training = generator.training
    generator.eval()
    try:
        images = sample_images(generator, n, seed, psi=psi, method=method)
        scores = score_images(classifier, images, real)
        if (digits := requested_digits(generator, n)) is not None:
            scores["fidelity"] = fidelity(classifier, images, digits)
        return scores
    finally:
        generator.train(was_training)
