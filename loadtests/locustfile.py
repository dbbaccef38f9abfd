"""Locust scenarios against a running server (`make serve`, then `make load`).

Every user checks the content of each answer, not just the status: a wrong digit is a failure.
The token comes from $TORCHSERVE_TOKEN or the server's key file, as for the clients.
"""

from __future__ import annotations

import json
import random

import torch
from locust import FastHttpUser, constant, task

from clients.auth import find_token
from digitlab.palindrome import palindrome_batch

MIN_LENGTH, MAX_LENGTH = 3, 15


def random_prefix(rng: random.Random, generator: torch.Generator) -> tuple[list[int], int]:
    """(first T digits, missing digit) of a random palindrome, T uniform in the served range."""
    inputs, targets = palindrome_batch(1, rng.randint(MIN_LENGTH, MAX_LENGTH), generator)
    return inputs[0].tolist(), int(targets[0])


class PalindromeUser(FastHttpUser):
    """POST /predictions/palindrome as fast as answers come back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        token = find_token()
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        self.rng = random.Random()
        self.generator = torch.Generator().manual_seed(self.rng.randrange(2**31))

    @task
    def palindrome(self) -> None:
        digits, expected = random_prefix(self.rng, self.generator)
        body = json.dumps({"digits": digits})
        with self.client.post("/predictions/palindrome", data=body, headers=self.headers,
                              name="palindrome", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif resp.json().get("digit") != expected:
                resp.failure(f"wrong digit for {digits}: {resp.text[:200]}")
