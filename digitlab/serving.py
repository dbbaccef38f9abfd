"""The serving layer: what each endpoint means, whatever transport carries its requests.

`load(kind, checkpoint, options, device)` builds a served model kind (its networks and limits) from a
checkpoint and its model config's `handler:` options; the service's `parse` turns a JSON body into a
validated request and its `answer` turns a batch of requests into one answer each. The TorchServe
handlers (handlers/), the in-process benchmark and the FastAPI baseline (benchmarks/) all call these,
so the three serve the same semantics and cannot drift; a transport only moves bytes.

An answer is one of:
- a pydantic model: sent as compact JSON;
- `Binary`: bytes with their media type (a PNG grid, a GIF) and extra response headers;
- `InvalidRequest`: that request's own 4xx with its JSON error body (e.g. a digit search that spent its budget);
- an iterator of `Frame`s: a streamed interpolation, each frame generated when the transport asks for it.
"""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel
from torch import nn

from digitlab.checkpoint import load_model_and_meta
from digitlab.generation import (
    DigitSearch,
    digit_samples,
    frames,
    generate,
    interpolation_latents,
    sample_response,
)
from digitlab.imaging import gif_bytes, grid_png, to_uint8
from digitlab.latent import sample_latents
from digitlab.networks import PalindromeNet
from digitlab.palindrome import predict_probabilities
from digitlab.schemas import (
    MAX_SEED,
    Frame,
    GeneratorLimits,
    InterpolateRequest,
    InterpolateResponse,
    InvalidRequest,
    PalindromeRequest,
    PalindromeResponse,
    SampleRequest,
    parse_request,
)


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
    def load(cls, checkpoint: Path, options: dict[str, Any], device: torch.device | str) -> Service:
        """Its networks on `device` from `checkpoint` (and files `options` name, next to it); limits from `options`."""
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


@dataclass
class PalindromeService(Service):
    kind: ClassVar[str] = "palindrome"
    schema: ClassVar[type[BaseModel]] = PalindromeRequest
    model: PalindromeNet
    meta: dict[str, Any]

    @classmethod
    def load(cls, checkpoint: Path, options: dict[str, Any], device: torch.device | str) -> PalindromeService:
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


class Drawn(NamedTuple):
    """The images answering one sample request."""

    seed: int
    images: torch.Tensor  # (n, 1, 28, 28) in [-1, 1]
    indices: list[int] | None = None  # their latent indices; None means 0..n-1


@dataclass
class GeneratorService(Service):
    """The generator, its limits, and the classifier that finds digits (and reads frames) where configured."""

    generator: nn.Module
    meta: dict[str, Any]
    config_limits: GeneratorLimits
    search: DigitSearch
    classifier: nn.Module | None = None
    classifier_meta: dict[str, Any] = field(default_factory=dict)
    default_classifier: ClassVar[str | None] = None  # loaded when the options name none

    @classmethod
    def load(cls, checkpoint: Path, options: dict[str, Any], device: torch.device | str) -> GeneratorService:
        generator, meta = load_model_and_meta(checkpoint, device, expect="generator")
        limits = GeneratorLimits(**{k: v for k, v in options.items() if k in GeneratorLimits.model_fields})
        search = DigitSearch(
            options.get("digit_search_budget", DigitSearch.budget),
            options.get("digit_min_confidence", DigitSearch.min_confidence),
        )
        service = cls(generator, meta, limits, search)
        if name := options.get("classifier", cls.default_classifier):
            # Next to the checkpoint: the model directory of an unpacked archive, or weights/ here.
            service.classifier, service.classifier_meta = load_model_and_meta(
                checkpoint.parent / name, device, expect="classifier"
            )
        return service

    def limits(self) -> dict[str, int]:
        return self.config_limits.model_dump()

    def describe(self) -> dict[str, Any]:
        card = {"kind": self.kind, "limits": self.limits(), "generator": model_card(self.generator, self.meta)}
        if self.classifier is not None:
            card |= {
                "digit_search": asdict(self.search),
                "classifier": model_card(self.classifier, self.classifier_meta),
            }
        return card


class SampleService(GeneratorService):
    kind: ClassVar[str] = "sample"
    schema: ClassVar[type[BaseModel]] = SampleRequest

    def parse(self, body: Any, accept: str = "") -> SampleRequest:
        request = super().parse(body)
        if "image/png" in accept:  # `curl -H "Accept: image/png" -o grid.png`
            request = request.model_copy(update={"format": "grid"})
        return request

    def answer(self, requests: list[SampleRequest]) -> list[Answer]:
        answers: list[Answer] = []
        for request, drawn in zip(requests, self.draw(requests)):
            if isinstance(drawn, InvalidRequest) or request.format != "grid":
                answers.append(
                    drawn
                    if isinstance(drawn, InvalidRequest)
                    else sample_response(drawn.seed, drawn.images, raw=request.format == "raw", indices=drawn.indices)
                )
            else:
                answers.append(Binary(grid_png(drawn.images), "image/png", {"X-Seed": str(drawn.seed)}))
        return answers

    def draw(self, requests: list[SampleRequest]) -> list[Drawn | InvalidRequest]:
        """The images of each request: one generator forward for every plain request of the batch; a request
        with a `digit` runs its own bounded search (one forward per chunk) and may be refused (422).

        A request without a seed gets a fresh one, returned so that its images can be drawn again.
        """
        seeds = [r.seed if r.seed is not None else secrets.randbelow(MAX_SEED + 1) for r in requests]
        plain = [(seed, r) for seed, r in zip(seeds, requests) if r.digit is None]
        drawn = iter([])
        if plain:
            z = torch.cat([sample_latents(seed, r.n, psi=r.truncation) for seed, r in plain])  # (sum n, 100)
            drawn = iter(generate(self.generator, z).split([r.n for _, r in plain]))
        out: list[Drawn | InvalidRequest] = []
        for seed, r in zip(seeds, requests):
            if r.digit is None:
                out.append(Drawn(seed, next(drawn)))
            elif self.classifier is None:
                out.append(InvalidRequest('this server does not search for digits: leave out "digit"'))
            else:
                try:
                    indices, images = digit_samples(
                        self.generator, self.classifier, r.digit, r.n, seed, self.search, r.truncation
                    )
                except InvalidRequest as err:
                    out.append(err)
                else:
                    out.append(Drawn(seed, images, indices))
        return out


class InterpolateService(GeneratorService):
    kind: ClassVar[str] = "interpolate"
    schema: ClassVar[type[BaseModel]] = InterpolateRequest
    default_classifier: ClassVar[str | None] = "classifier.pt"  # finds digit endpoints and labels every frame

    def answer(self, requests: list[InterpolateRequest]) -> list[Answer]:
        """Paths first (a point whose digit cannot be found is that request's 422, before any frame is
        sent); then one forward for every frame of every whole request, and a lazy stream for the others."""
        paths: list[torch.Tensor | InvalidRequest] = []  # latents (steps, 100) per request
        for request in requests:
            try:
                paths.append(self.path(request))
            except InvalidRequest as err:
                paths.append(err)
        whole = [z for r, z in zip(requests, paths) if not isinstance(z, InvalidRequest) and not r.stream]
        rendered = iter(generate(self.generator, torch.cat(whole)).split([len(z) for z in whole]) if whole else [])
        answers: list[Answer] = []
        for request, z in zip(requests, paths):
            if isinstance(z, InvalidRequest):
                answers.append(z)
            elif request.stream:
                answers.append(self.stream(z))
            else:
                answers.append(self.whole(request, next(rendered)))
        return answers

    def whole(self, request: InterpolateRequest, images: torch.Tensor) -> InterpolateResponse | Binary:
        """All frames of one request at once, from its images (steps, 1, 28, 28): a GIF or the JSON frames."""
        if request.format == "gif":
            return Binary(gif_bytes(to_uint8(images)), "image/gif")
        return InterpolateResponse(method=request.method, frames=frames(images, self.classifier, 0, len(images)))

    def path(self, request: InterpolateRequest) -> torch.Tensor:
        """The request's path through latent space: (steps, 100), first and last rows exactly its endpoints."""
        return interpolation_latents(request, self.generator, self.classifier, self.search)

    def stream(self, z: torch.Tensor) -> Iterator[Frame]:
        """Frames of the path z (steps, 100), each generated only when the previous one has been taken."""
        for k in range(len(z)):
            yield frames(generate(self.generator, z[k : k + 1]), self.classifier, k, len(z))[0]


SERVICES: dict[str, type[PalindromeService | GeneratorService]] = {
    s.kind: s for s in (PalindromeService, SampleService, InterpolateService)
}


def load(
    kind: str, checkpoint: str | Path, options: dict[str, Any] | None = None, device: torch.device | str = "cpu"
) -> Service:
    """The service of model `kind` from its checkpoint and its model config's `handler:` options.

    Files the options name (the classifier) are read next to the checkpoint: the model directory of an
    unpacked archive, or weights/ in this repository.
    """
    if kind not in SERVICES:
        raise ValueError(f"no served model kind {kind!r}; choose from {sorted(SERVICES)}")
    return SERVICES[kind].load(Path(checkpoint), options or {}, device)
