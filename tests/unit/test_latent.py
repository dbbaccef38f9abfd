"""Latent ids, interpolation and digit search: the pure functions training and serving share."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from digitlab.constants import LATENT_DIM
from digitlab.latent import (
    find_latent_for_digit,
    find_latents_for_digit,
    interpolate,
    latent_for,
    lerp,
    sample_latents,
    slerp,
    truncation_bound,
)
from digitlab.networks import Generator, GeneratorConfig


def untruncated(seed: int, index: int) -> torch.Tensor:
    """The latent of an id as it was drawn before truncation existed (SeedSequence, then randn)."""
    state = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
    return torch.randn(LATENT_DIM, generator=torch.Generator().manual_seed(state))


@pytest.mark.parametrize("method", ["scale", "resample"])
def test_truncation_one_is_off_bit_for_bit(method):
    for seed, index in ((0, 0), (7, 3), (2**31 - 1, 12345)):
        assert torch.equal(latent_for(seed, index, 1.0, method), untruncated(seed, index))
        assert torch.equal(latent_for(seed, index), untruncated(seed, index))


def test_scale_truncation_pulls_every_latent_toward_the_mean():
    z = latent_for(7, 3)
    for psi in (0.9, 0.5, 0.01):
        assert torch.allclose(latent_for(7, 3, psi, "scale"), psi * z)


def test_the_resample_bound_keeps_psi_of_the_gaussian_mass():
    assert truncation_bound(1.0) == math.inf
    assert truncation_bound(0.5) == pytest.approx(0.6745, abs=1e-4)  # the quartile of N(0, 1)
    assert truncation_bound(0.9545) == pytest.approx(2.0, abs=1e-3)  # two standard deviations
    for psi in (0.0, -0.1, 1.01, math.nan):
        with pytest.raises(ValueError, match="psi"):
            truncation_bound(psi)


@pytest.mark.parametrize("psi", [0.9, 0.7, 0.5])
def test_resample_truncation_redraws_only_what_lies_outside_the_bound(psi):
    bound = truncation_bound(psi)
    for index in range(20):
        z, before = latent_for(3, index, psi, "resample"), untruncated(3, index)
        assert z.abs().max() <= bound
        inside = before.abs() <= bound
        assert torch.equal(z[inside], before[inside])  # the id's own numbers, where they already fit
        assert torch.equal(z, latent_for(3, index, psi, "resample"))  # and the same every time
    assert torch.equal(sample_latents(3, 20, psi=psi, method="resample")[7], latent_for(3, 7, psi, "resample"))


def test_resampling_is_bounded_at_a_tiny_psi():
    """At psi = 1e-6 a redraw almost never lands inside: the rounds stop and the rest is clamped."""
    z = latent_for(0, 0, 1e-6, "resample")
    assert z.abs().max() <= truncation_bound(1e-6)


def test_unknown_truncation_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        latent_for(0, 0, 0.5, "clip")


def test_latent_is_a_function_of_its_id_alone():
    assert latent_for(7, 3).shape == (LATENT_DIM,)
    assert torch.equal(latent_for(7, 3), latent_for(7, 3))
    assert torch.equal(sample_latents(7, 10)[3], latent_for(7, 3))  # independent of batch size
    assert torch.equal(sample_latents(7, 4, start=3)[0], latent_for(7, 3))  # and of paging
    assert not torch.equal(latent_for(7, 3), latent_for(8, 3))
    assert not torch.equal(latent_for(7, 3), latent_for(7, 4))


def test_latents_look_standard_normal():
    z = sample_latents(0, 200)  # (200, 100)
    assert z.shape == (200, LATENT_DIM)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_latent_rejects_negative_ids():
    with pytest.raises(ValueError):
        latent_for(-1, 0)


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_has_exact_endpoints(method):
    z0, z1 = latent_for(0, 0), latent_for(0, 1)
    path = interpolate(z0, z1, 7, method)
    assert path.shape == (7, LATENT_DIM)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)


def test_lerp_midpoint_is_the_mean():
    z0, z1 = latent_for(0, 0), latent_for(0, 1)
    assert torch.allclose(lerp(z0, z1, 3)[1], (z0 + z1) / 2)


def test_slerp_keeps_the_norm_that_lerp_loses():
    z0, z1 = latent_for(0, 0), latent_for(0, 1)
    z1 = z1 * z0.norm() / z1.norm()  # equal radii: slerp stays on that sphere
    assert torch.allclose(slerp(z0, z1, 9).norm(dim=1), z0.norm().expand(9), rtol=1e-5)
    assert lerp(z0, z1, 9)[4].norm() < 0.9 * z0.norm()  # the straight line cuts through the inside


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    z0 = latent_for(0, 0)
    assert torch.allclose(slerp(z0, 2 * z0, 5), lerp(z0, 2 * z0, 5))


def test_interpolate_rejects_unknown_method_and_short_paths():
    z0, z1 = latent_for(0, 0), latent_for(0, 1)
    with pytest.raises(ValueError):
        interpolate(z0, z1, 5, "cubic")
    with pytest.raises(ValueError):
        lerp(z0, z1, 1)


class FixedReader(nn.Module):
    """A stand-in classifier: reads `digit` with probability ~1 when the image is brighter than `threshold`."""

    def __init__(self, digit: int, threshold: float) -> None:
        super().__init__()
        self.digit, self.threshold = digit, threshold

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        logits = torch.zeros(len(images), 10)
        logits[:, self.digit] = 50.0 * (images.mean(dim=(1, 2, 3)) > self.threshold)
        return logits


def test_find_latent_for_digit_returns_the_first_confident_id():
    torch.manual_seed(0)
    generator = Generator().eval()
    with torch.no_grad():
        brightness = generator(sample_latents(5, 64)).mean(dim=(1, 2, 3))  # (64,): eval mode, per-sample
    threshold = float(brightness.sort().values[-3])  # a few ids qualify
    hit = find_latent_for_digit(
        generator, FixedReader(4, threshold - 1e-6), digit=4, seed=5, budget=64, min_confidence=0.95, batch_size=16
    )
    expected = int((brightness >= threshold - 1e-6).nonzero()[0])
    assert (hit.seed, hit.index) == (5, expected)
    assert torch.equal(hit.z, latent_for(5, expected)) and hit.confidence > 0.99


def test_find_latent_for_digit_raises_when_the_budget_is_spent():
    generator = Generator().eval()
    with pytest.raises(LookupError):
        find_latent_for_digit(generator, FixedReader(4, 10.0), digit=4, seed=0, budget=8, min_confidence=0.95)


def test_find_latents_for_digit_returns_the_first_n_confident_ids_with_their_samples():
    torch.manual_seed(0)
    generator = Generator().eval()
    with torch.no_grad():
        brightness = generator(sample_latents(5, 64)).mean(dim=(1, 2, 3))  # (64,)
    threshold = float(brightness.sort().values[-10]) - 1e-6  # 10 of 64 ids qualify, spread over the chunks
    hits = find_latents_for_digit(
        generator, FixedReader(4, threshold), digit=4, n=6, seed=5, budget=64, min_confidence=0.95, batch_size=16
    )
    expected = (brightness >= threshold).nonzero().flatten().tolist()[:6]
    assert [h.index for h in hits] == expected and {h.seed for h in hits} == {5}
    with torch.no_grad():  # each hit's image is what sampling its id draws
        torch.testing.assert_close(torch.stack([h.image for h in hits]), generator(torch.stack([h.z for h in hits])))
    again = find_latents_for_digit(
        generator, FixedReader(4, threshold), digit=4, n=6, seed=5, budget=64, min_confidence=0.95, batch_size=32
    )
    assert [h.index for h in again] == expected  # deterministic by seed, whatever the chunk size
    with pytest.raises(LookupError, match="10 of 11 latents"):
        find_latents_for_digit(
            generator, FixedReader(4, threshold), digit=4, n=11, seed=5, budget=64, min_confidence=0.95, batch_size=16
        )


def test_a_first_chunk_changes_the_work_not_the_hits():
    """The digit generator's draw starts with a chunk just above n; the hits are the same ids as any chunking."""
    torch.manual_seed(0)
    generator = Generator().eval()
    with torch.no_grad():
        brightness = generator(sample_latents(5, 64)).mean(dim=(1, 2, 3))  # (64,)
    threshold = float(brightness.sort().values[-10]) - 1e-6
    reader = FixedReader(4, threshold)
    plain = find_latents_for_digit(generator, reader, 4, 6, 5, 64, 0.95, batch_size=16)
    first = find_latents_for_digit(generator, reader, 4, 6, 5, 64, 0.95, batch_size=16, first_chunk=3)
    assert [h.index for h in first] == [h.index for h in plain]


def test_a_conditional_drawer_is_searched_like_a_generator():
    """`draw` may be any callable z -> images: here a conditional generator told the digit."""
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(hidden=(16, 32), classes=10)).eval()
    asked = torch.full((1,), 4, dtype=torch.long)
    hits = find_latents_for_digit(
        lambda z: generator(z, asked.expand(len(z))), FixedReader(4, -10.0), 4, 3, 2, 8, 0.9, first_chunk=5
    )
    assert [h.index for h in hits] == [0, 1, 2]
    with torch.no_grad():
        expected = generator(sample_latents(2, 3), torch.full((3,), 4))
    torch.testing.assert_close(torch.stack([h.image for h in hits]), expected)
