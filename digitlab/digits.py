"""Palindrome rules that need no framework: the schemas (and so the clients) use them without torch.

Semantics (the course's PalindromeDataset): a random digit palindrome has T + 1 digits; the model
sees the first T and predicts the last, which always equals the first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from digitlab.constants import NUM_DIGITS


def is_palindrome_prefix(digits: Sequence[int]) -> bool:
    """True when `digits` can be the first T digits of a palindrome of T + 1 digits.

    The missing last digit mirrors digits[0], so what remains, digits[1:], must itself read the same
    backwards.
    """
    rest = list(digits[1:])
    return rest == rest[::-1]


def expected_digit(digits: Sequence[int]) -> int:
    """The digit that completes the palindrome: the mirror of the first."""
    return int(digits[0])


def random_prefix(length: int, rng: random.Random) -> tuple[list[int], int]:
    """(first `length` digits, missing last digit) of a random palindrome of length + 1 digits."""
    full = length + 1
    half = [rng.randrange(NUM_DIGITS) for _ in range((full + 1) // 2)]
    digits = half + half[::-1][full % 2 :]  # odd lengths share the middle digit
    return digits[:-1], digits[-1]
