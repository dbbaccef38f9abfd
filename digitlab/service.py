"""What a served model is to every transport: a `Service` that parses a body, answers a batch, describes itself.

An answer is one of:
- a pydantic model: sent as compact JSON;
- `Binary`: bytes with their media type (a PNG grid, a GIF) and extra response headers;
- `InvalidRequest`: that request's own 4xx with its JSON error body (e.g. a digit search that spent its budget);
- an iterator of `Frame`s: a streamed interpolation, each frame generated when the transport asks for it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from digitlab.errors import InvalidRequest
from digitlab.options import HandlerOptions
from digitlab.schemas import Frame, parse_request


@dataclass(frozen=True)
class Binary:
    """An answer that is not JSON: its bytes, their media type, and headers to send with them."""

    data: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


Answer = BaseModel | Binary | InvalidRequest | Iterator[Frame]


def summarise_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's `meta` as a user reads it: the training history left out, per-length accuracy summarised."""
    out = {k: v for k, v in meta.items() if k != "history"}
    accuracy = meta.get("accuracy")
    if isinstance(accuracy, dict) and accuracy:  # {"3": 1.0, ..., "100": 1.0}: accuracy per input length
        lengths = sorted(int(t) for t in accuracy)
        out["accuracy"] = {
            "lengths": [lengths[0], lengths[-1]],
            "min": min(accuracy.values()),
            "mean": round(statistics.fmean(accuracy.values()), 6),
        }
    return out


def model_card(network: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    return {"config": asdict(network.config), "meta": summarise_meta(meta)}


class Service:
    """One served model kind: `parse` a body into its request, `answer` a batch, `describe` what it can do."""

    kind: ClassVar[str]
    schema: ClassVar[type[BaseModel]]

    @classmethod
    def load(cls, checkpoint: Path, options: HandlerOptions, device: torch.device | str) -> Service:
        """Its networks on `device` from `checkpoint` (and files `options` name, next to it)."""
        raise NotImplementedError

    def limits(self) -> dict[str, Any]:
        """Limits that depend on the loaded model or its config, passed to the schema's validators."""
        raise NotImplementedError

    def parse(self, body: Any, accept: str = "") -> BaseModel:
        """A JSON body (bytes, str or already decoded) -> its validated request; InvalidRequest (4xx) if not.
        `accept` is the request's Accept header, where the transport has one."""
        return parse_request(self.schema, body, self.limits())

    def answer(self, requests: list[Any]) -> list[Answer]:
        """A batch of validated requests -> one answer each (see the module docstring)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the model can do: its kind, its limits and its checkpoints' config and summarised meta."""
        raise NotImplementedError
