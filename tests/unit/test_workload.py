"""The request mix every `make bench` target and the locust users draw from (digitlab.workload)."""

import json
import random
import subprocess
import sys

from digitlab.palindrome import expected_digit, is_palindrome_prefix
from digitlab.schemas import InterpolateRequest, PalindromeRequest, SampleRequest, parse_request
from digitlab.workload import (
    MAX_LENGTH,
    MIN_LENGTH,
    interpolation_body,
    palindrome_body,
    palindrome_prefix,
    sample_body,
)
from tools.build_archives import ROOT


def test_palindrome_prefixes_are_valid_cover_the_range_and_know_their_answer():
    rng = random.Random(0)
    draws = [palindrome_prefix(rng) for _ in range(2000)]
    assert {len(digits) for digits, _ in draws} == set(range(MIN_LENGTH, MAX_LENGTH + 1))
    for digits, missing in draws:
        assert is_palindrome_prefix(digits) and missing == expected_digit(digits)
        assert (digits + [missing]) == (digits + [missing])[::-1]


def test_every_body_is_a_valid_request_within_the_served_limits():
    rng = random.Random(1)
    limits = {"min_length": MIN_LENGTH, "max_length": MAX_LENGTH}
    for _ in range(100):
        parse_request(PalindromeRequest, json.dumps(palindrome_body(rng)), limits)
    parse_request(SampleRequest, json.dumps(sample_body()), {"max_samples": 64})
    streamed = parse_request(InterpolateRequest, json.dumps(interpolation_body(rng, 8, stream=True)), {"max_steps": 64})
    assert streamed.stream is True and streamed.steps == 8
    assert "stream" not in interpolation_body(rng)  # a unary call must never ask for a stream


def test_the_workload_needs_only_the_standard_library():
    """A locust worker imports it without torch, numpy or pydantic installed."""
    blocked = ["torch", "numpy", "pydantic"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None  # importing it now raises ImportError\n"
        "import digitlab.workload, random\n"
        "print(digitlab.workload.palindrome_body(random.Random(0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("{'digits': [")
