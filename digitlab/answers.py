"""Batched answers for served requests: the work a server does between a validated request and its reply.

Shared by the TorchServe handlers and by the benchmark baselines (in-process, FastAPI), so every way
of serving runs exactly the same code.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

import torch
from torch import nn

from digitlab.generation import DigitSearch, digit_samples, generate
from digitlab.latent import sample_latents
from digitlab.networks import PalindromeNet
from digitlab.palindrome import predict_probabilities
from digitlab.schemas import MAX_SEED, InvalidRequest, PalindromeRequest, PalindromeResponse, SampleRequest


def palindrome_answers(model: PalindromeNet, requests: list[PalindromeRequest]) -> list[PalindromeResponse]:
    """One forward for the whole batch (mixed lengths) -> one answer per request."""
    probs = predict_probabilities(model, [r.digits for r in requests])  # (B, 10)
    return [
        PalindromeResponse(digit=int(p.argmax()), probabilities=[round(float(x), 6) for x in p],
                           length=len(r.digits), model=model.config.cell)
        for r, p in zip(requests, probs)
    ]


class Drawn(NamedTuple):
    """The images answering one sample request."""

    seed: int
    images: torch.Tensor  # (n, 1, 28, 28) in [-1, 1]
    indices: list[int] | None = None  # their latent indices; None means 0..n-1


def sample_images(generator: nn.Module, requests: list[SampleRequest], classifier: nn.Module | None = None,
                  search: DigitSearch = DigitSearch()) -> list[Drawn | InvalidRequest]:
    """The images of each request: one generator forward for every plain request of the batch; a request
    with a `digit` runs its own bounded search (one forward per chunk) and may be refused (422).

    A request without a seed gets a fresh one, returned so that its images can be drawn again.
    """
    seeds = [r.seed if r.seed is not None else secrets.randbelow(MAX_SEED + 1) for r in requests]
    plain = [(seed, r) for seed, r in zip(seeds, requests) if r.digit is None]
    drawn = iter([])
    if plain:
        z = torch.cat([sample_latents(seed, r.n) for seed, r in plain])  # (sum n, 100)
        drawn = iter(generate(generator, z).split([r.n for _, r in plain]))
    answers: list[Drawn | InvalidRequest] = []
    for seed, r in zip(seeds, requests):
        if r.digit is None:
            answers.append(Drawn(seed, next(drawn)))
        elif classifier is None:
            answers.append(InvalidRequest("this server does not search for digits: leave out \"digit\""))
        else:
            try:
                indices, images = digit_samples(generator, classifier, r.digit, r.n, seed, search)
            except InvalidRequest as err:
                answers.append(err)
            else:
                answers.append(Drawn(seed, images, indices))
    return answers
