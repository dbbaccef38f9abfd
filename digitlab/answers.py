"""Batched answers for served requests: the work a server does between a validated request and its reply.

Shared by the TorchServe handlers and by the benchmark baselines (in-process, FastAPI), so every way
of serving runs exactly the same code.
"""

from __future__ import annotations

import secrets

import torch
from torch import nn

from digitlab.generation import generate
from digitlab.latent import sample_latents
from digitlab.networks import PalindromeNet
from digitlab.palindrome import predict_probabilities
from digitlab.schemas import MAX_SEED, PalindromeRequest, PalindromeResponse, SampleRequest


def palindrome_answers(model: PalindromeNet, requests: list[PalindromeRequest]) -> list[PalindromeResponse]:
    """One forward for the whole batch (mixed lengths) -> one answer per request."""
    probs = predict_probabilities(model, [r.digits for r in requests])  # (B, 10)
    return [
        PalindromeResponse(digit=int(p.argmax()), probabilities=[round(float(x), 6) for x in p],
                           length=len(r.digits), model=model.config.cell)
        for r, p in zip(requests, probs)
    ]


def sample_images(generator: nn.Module, requests: list[SampleRequest]) -> list[tuple[int, torch.Tensor]]:
    """One generator forward for every image of the batch -> (seed, images (n, 1, 28, 28)) per request.

    A request without a seed gets a fresh one, returned so that its images can be drawn again.
    """
    seeds = [r.seed if r.seed is not None else secrets.randbelow(MAX_SEED + 1) for r in requests]
    z = torch.cat([sample_latents(seed, r.n) for seed, r in zip(seeds, requests)])  # (sum n, 100)
    images = generate(generator, z).split([r.n for r in requests])
    return list(zip(seeds, images))
