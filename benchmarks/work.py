"""The per-request work every server of `palindrome` and `sample` must do, as the handlers do it.

Used by the in-process compute limit (a) and by the FastAPI baseline (d), so both run exactly the
core calls of `handlers/palindrome_handler.py` and `handlers/generator_handler.py`: validated request
in, one forward for the whole batch, schema object out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from digitlab.answers import sample_images
from digitlab.checkpoint import load_model, load_model_and_meta
from digitlab.generation import sample_response
from digitlab.networks import PalindromeNet
from digitlab.schemas import GeneratorLimits, SampleRequest, SampleResponse
from tools.build_archives import ARCHIVES, ROOT


def model_config(name: str) -> dict[str, Any]:
    """The shipped model config (model_config/*.yaml) of archive `name`."""
    return yaml.safe_load((ROOT / ARCHIVES[name].config).read_text())


def weights(name: str) -> Path:
    return ROOT / ARCHIVES[name].weights


def load_palindrome() -> tuple[PalindromeNet, dict[str, int]]:
    """The served LSTM and its validation limits (the lengths it was trained on), as the handler loads them."""
    model, meta = load_model_and_meta(weights("palindrome"), expect="palindrome")
    return model, {"min_length": meta["min_length"], "max_length": meta["max_length"]}


def load_generator(name: str) -> tuple[torch.nn.Module, dict[str, int]]:
    """The generator and the limits of archive `name` (sample or interpolate) from its `handler:` options."""
    options = model_config(name)["handler"]
    limits = GeneratorLimits(**{k: v for k, v in options.items() if k in GeneratorLimits.model_fields})
    return load_model(weights(name), expect="generator"), limits.model_dump()


def sample_answers(generator: torch.nn.Module, requests: list[SampleRequest]) -> list[SampleResponse]:
    """One generator forward for every image of the batch; PNG (or raw) answers. The grid format is not timed."""
    return [sample_response(d.seed, d.images, raw=r.format == "raw")
            for d, r in zip(sample_images(generator, requests), requests)]
