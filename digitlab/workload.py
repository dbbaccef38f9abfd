"""The request mix of `make bench` and of the locust users, defined once, with the standard library only.

Every target of `make bench` (TorchServe through locust, in-process, naive TorchServe, FastAPI) draws its
requests from here, loadtests/locustfile.py included, so their numbers compare the same work; a locust
worker imports it without torch (it and the two core modules it uses import only the standard library).
"""

from __future__ import annotations

import random
from typing import Any

from digitlab.constants import MAX_SEED
from digitlab.digits import random_prefix

MIN_LENGTH, MAX_LENGTH = 3, 15  # palindrome inputs: T uniform in 3..15, served by both palindrome models
SAMPLE_N = 16  # images per sample request
INTERPOLATE_STEPS = 32  # frames per interpolation

# Names of the gRPC entries in locust's statistics (REST entries are named after the model).
GRPC_PALINDROME, FIRST_FRAME, LAST_FRAME = "palindrome gRPC", "interpolate first frame", "interpolate last frame"


def palindrome_prefix(
    rng: random.Random, min_length: int = MIN_LENGTH, max_length: int = MAX_LENGTH
) -> tuple[list[int], int]:
    """(first T digits, missing last digit) of a random digit palindrome of T + 1 digits, T uniform."""
    return random_prefix(rng.randint(min_length, max_length), rng)


def palindrome_body(rng: random.Random) -> dict[str, Any]:
    return {"digits": palindrome_prefix(rng)[0]}


def sample_body(n: int = SAMPLE_N) -> dict[str, Any]:
    """A sample request: fresh seeds (the server draws one), so every request does the same work."""
    return {"n": n}


def interpolation_body(rng: random.Random, steps: int = INTERPOLATE_STEPS, stream: bool = False) -> dict[str, Any]:
    """A path between two latent ids: ids cost no digit search, so every request does the same work."""
    seed = rng.randrange(MAX_SEED)
    body: dict[str, Any] = {"start": {"seed": seed, "index": 0}, "end": {"seed": seed, "index": 1}, "steps": steps}
    return body | {"stream": True} if stream else body
