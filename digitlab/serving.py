"""The serving layer: what each endpoint means, whatever transport carries its requests.

`load(kind, checkpoint, options, device)` builds a served model kind (its networks and limits) from a
checkpoint and its model config's typed `handler:` options (digitlab.options); the service's `parse` turns a
JSON body into a validated request and its `answer` turns a batch of requests into one answer each
(digitlab.service says what an answer is). The TorchServe handlers (handlers/), the in-process benchmark and
the FastAPI baseline (benchmarks/) all call these, so the three serve the same semantics and cannot drift; a
transport only moves bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from digitlab.checkpoint import load_model_and_meta
from digitlab.generator_service import GeneratorService, InterpolateService, SampleService
from digitlab.networks import PalindromeNet
from digitlab.options import HandlerOptions, parse_options
from digitlab.palindrome import predict_probabilities
from digitlab.schemas import PalindromeRequest, PalindromeResponse
from digitlab.service import Answer, Binary, Service, model_card

__all__ = [
    "Answer",
    "Binary",
    "Service",
    "SERVICES",
    "load",
    "PalindromeService",
    "SampleService",
    "InterpolateService",
]


@dataclass
class PalindromeService(Service):
    kind: ClassVar[str] = "palindrome"
    schema: ClassVar[type[BaseModel]] = PalindromeRequest
    model: PalindromeNet
    meta: dict[str, Any]

    @classmethod
    def load(cls, checkpoint: Path, options: HandlerOptions, device: torch.device | str) -> PalindromeService:
        return cls(*load_model_and_meta(checkpoint, device, expect="palindrome"))

    def limits(self) -> dict[str, int]:
        # The lengths the model was trained (and measured) on are the lengths it serves.
        return {"min_length": self.meta["min_length"], "max_length": self.meta["max_length"]}

    def answer(self, requests: list[PalindromeRequest]) -> list[PalindromeResponse]:
        """One forward for the whole batch (mixed lengths) -> one answer per request."""
        probs = predict_probabilities(self.model, [r.digits for r in requests])  # (B, 10)
        # Python numbers once for the batch (per-element tensor reads cost more than the forward), and
        # responses built without validation: every field is computed here, of the declared type.
        digits, rows = probs.argmax(dim=1).tolist(), probs.tolist()
        cell = self.model.config.cell
        return [
            PalindromeResponse.model_construct(
                digit=digit, probabilities=[round(x, 6) for x in row], length=len(r.digits), model=cell
            )
            for r, digit, row in zip(requests, digits, rows)
        ]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "limits": self.limits(), "palindrome": model_card(self.model, self.meta)}


SERVICES: dict[str, type[PalindromeService | GeneratorService]] = {
    s.kind: s for s in (PalindromeService, SampleService, InterpolateService)
}


def load(
    kind: str,
    checkpoint: str | Path,
    options: HandlerOptions | dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    source: str = "handler options",
) -> Service:
    """The service of model `kind` from its checkpoint and its model config's `handler:` options (typed, or the
    section as a dict, checked here: an unknown or ill-typed option is an OptionsError that names `source`).

    Files the options name (the classifier, the digit generator) are read next to the checkpoint: the model
    directory of an unpacked archive, or weights/ in this repository.
    """
    if kind not in SERVICES:
        raise ValueError(f"no served model kind {kind!r}; choose from {sorted(SERVICES)}")
    if not isinstance(options, HandlerOptions):
        options = parse_options(kind, options, source)
    return SERVICES[kind].load(Path(checkpoint), options, device)
