"""Palindrome digits: generation for training, ground truth, and batched prediction for serving.

Semantics (the course's PalindromeDataset): a random digit palindrome has T + 1 digits; the model
sees the first T and predicts the last, which always equals the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from digitlab.constants import NUM_DIGITS
from digitlab.digits import expected_digit, is_palindrome_prefix  # noqa: F401 - re-exported: torch-free, in digitlab.digits
from digitlab.networks import PalindromeNet


def random_palindromes(batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, length) int64 digit palindromes: a random first half mirrored onto the second."""
    half = torch.randint(0, NUM_DIGITS, (batch, (length + 1) // 2), generator=generator)
    mirrored = half.flip(1)[:, length % 2 :]  # odd lengths share the middle digit
    return torch.cat([half, mirrored], dim=1)


def palindrome_batch(
    batch: int, length: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (batch, T) = the first T digits of palindromes of T + 1 digits; targets (batch,) = the last."""
    full = random_palindromes(batch, length + 1, generator)
    return full[:, :-1], full[:, -1]


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed-length digit lists -> right-padded (B, T_max) int64 and lengths (B,) for `PalindromeNet`."""
    longest = max(len(s) for s in sequences)
    # One tensor from padded Python lists: a row-by-row copy cost a tensor per request in the serving path.
    padded = torch.tensor([[*s, *[0] * (longest - len(s))] for s in sequences], dtype=torch.int64)
    return padded, torch.tensor([len(s) for s in sequences], dtype=torch.int64)


@torch.inference_mode()
def predict_probabilities(model: PalindromeNet, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """One forward for a whole batch of mixed lengths -> class probabilities (B, 10) on the CPU."""
    device = next(model.parameters()).device
    padded, lengths = pad_batch(sequences)
    if bool((lengths == lengths[0]).all()):
        logits = model(padded.to(device))  # equal lengths: skip packing, it only costs time
    else:
        logits = model(padded.to(device), lengths)
    return torch.softmax(logits.float(), dim=1).cpu()


@torch.inference_mode()
def accuracy(model: PalindromeNet, length: int, samples: int, seed: int, batch: int = 1000) -> float:
    """Accuracy on `samples` fresh palindromes of `length` input digits, reproducible by `seed`."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, samples, batch):
        inputs, targets = palindrome_batch(min(batch, samples - start), length, generator)
        correct += int((model(inputs.to(device)).argmax(1).cpu() == targets).sum())
    return correct / samples
