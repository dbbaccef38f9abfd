"""The published contract agrees with a real server at every edge: the shortest and longest accepted request of
each served model answer 200, one past either end a 400 that states the same range.

The ranges are read from docs/api/openapi.json, the document clients are given, not from the code: a contract
that drifted from the checkpoints (it once said T = 3 to 100 for a model serving 3 to 200) fails here.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from clients.errors import ServerError
from digitlab import catalog
from digitlab.digits import random_prefix
from tools import openapi

pytestmark = pytest.mark.server


def published(model: str, pattern: str) -> tuple[int, int]:
    """(lowest, highest) that the contract's description of /predictions/<model> states, e.g. 'T = 3 to 200'."""
    document = json.loads(openapi.OUT.read_text())
    description = document["paths"][f"/predictions/{model}"]["post"]["description"]
    low, high = re.search(pattern, description).groups()
    return int(low), int(high)


def refused(rest_client, model: str, body: dict) -> str:
    with pytest.raises(ServerError) as err:
        rest_client.predict(model, body)
    assert err.value.status == 400, err.value
    return str(err.value)


@pytest.mark.parametrize("model", [m.name for m in catalog.MODELS if m.kind == "palindrome"])
def test_palindrome_lengths_at_the_published_edges(rest_client, model):
    low, high = published(model, r"T = (\d+) to (\d+)")
    rng = random.Random(0)
    for length in (low, high):
        digits, missing = random_prefix(length, rng)
        assert rest_client.predict(model, {"digits": digits})["digit"] == missing
    for length in (low - 1, high + 1):
        digits, _ = random_prefix(length, rng)
        assert f"this model accepts {low} to {high}" in refused(rest_client, model, {"digits": digits})


def test_sample_counts_at_the_published_edges(rest_client):
    low, high = published("sample", r"n images \((\d+) to (\d+)\)")
    for n in (low, high):
        assert len(rest_client.predict("sample", {"n": n, "seed": 1})["images"]) == n
    refused(rest_client, "sample", {"n": low - 1, "seed": 1})
    assert f"at most {high} samples" in refused(rest_client, "sample", {"n": high + 1, "seed": 1})


def test_interpolation_steps_at_the_published_edges(rest_client):
    low, high = published("interpolate", r"(\d+) to (\d+) frames")
    ends = {"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}}
    for steps in (low, high):
        assert len(rest_client.predict("interpolate", {**ends, "steps": steps})["frames"]) == steps
    refused(rest_client, "interpolate", {**ends, "steps": low - 1})
    assert f"at most {high} steps" in refused(rest_client, "interpolate", {**ends, "steps": high + 1})
