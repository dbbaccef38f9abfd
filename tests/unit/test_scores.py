"""Classifier-space FID, Inception Score and mode coverage, checked on cases with known answers."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from digitlab.networks import Generator, MnistClassifier
from digitlab.scores import (
    FeatureStats,
    class_histogram,
    feature_stats,
    frechet_distance,
    inception_score,
    kl_to_uniform,
    real_stats,
    score_generator,
)


def random_stats(rng: np.random.Generator, dim: int = 6) -> FeatureStats:
    a = rng.normal(size=(dim, dim))
    return FeatureStats(rng.normal(size=dim), a @ a.T + 0.1 * np.eye(dim))


def test_frechet_distance_matches_the_scipy_formula():
    rng = np.random.default_rng(0)
    a, b = random_stats(rng), random_stats(rng)
    covmean = scipy.linalg.sqrtm(a.cov @ b.cov).real
    expected = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov + b.cov - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_shift_is_its_squared_length():
    stats = feature_stats(torch.randn(500, 4))
    shifted = FeatureStats(stats.mean + np.array([3.0, 0, 0, 4.0]), stats.cov)
    assert frechet_distance(stats, shifted) == pytest.approx(25.0, rel=1e-6)


def test_inception_score_bounds():
    confident_balanced = torch.eye(10).repeat(5, 1)  # every class, each read with certainty
    assert inception_score(confident_balanced) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0)  # no information
    assert inception_score(torch.eye(10)[[3] * 20]) == pytest.approx(1.0)  # one mode


def test_histogram_and_kl_to_uniform():
    probs = torch.eye(10).repeat(3, 1)
    assert np.allclose(class_histogram(probs), 0.1)
    assert kl_to_uniform(class_histogram(probs)) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_uniform(class_histogram(torch.eye(10)[[7] * 4])) == pytest.approx(math.log(10))


def test_score_generator_reports_every_score_and_keeps_the_mode():
    torch.manual_seed(0)
    classifier, generator = MnistClassifier().eval(), Generator().train()
    real = real_stats(classifier, torch.rand(300, 1, 28, 28) * 2 - 1)
    scores = score_generator(generator, classifier, real, n=200, seed=3)
    assert scores["n"] == 200 and len(scores["histogram"]) == 10
    assert scores["fid"] > 0 and 1 <= scores["inception_score"] <= 10 and scores["kl_uniform"] >= 0
    assert 0.1 <= scores["confidence"] <= 1
    assert generator.training  # scored in eval mode, handed back in train mode
    assert score_generator(generator, classifier, real, n=200, seed=3)["fid"] == pytest.approx(scores["fid"])
