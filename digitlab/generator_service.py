"""The GAN's two endpoints, `sample` and `interpolate`, as services: every step of a request, in order.

Two generators may serve them (both loaded from the archive):
- the report's generator, z (100,) -> image: plain samples, and paths between latents;
- the digit generator (model config `handler.digit_generator`), a class-conditional generator trained beside it,
  (z, digit) -> image: it answers every request that names a digit, drawing ids of that seed until the
  classifier reads enough of them as the digit with p >= `digit_min_confidence` (usually the first n: one
  forward). Without it, a digit is searched for among the report's generator's samples, which costs a forward
  over up to `digit_search_budget` ids and accepts what the classifier (trained with it) reads.

An interpolation between two digit points walks the digit generator's input: z along the path (slerp/lerp) and
the digit's one-hot weights blended linearly, so the frames turn from one digit into the other.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel
from torch import nn

from digitlab.checkpoint import load_model_and_meta
from digitlab.constants import MAX_SEED, NUM_CLASSES
from digitlab.errors import InvalidRequest
from digitlab.generation import frames, generate, sample_response
from digitlab.imaging import gif_bytes, grid_png, to_uint8
from digitlab.latent import LatentHit, find_latents_for_digit, interpolate, latent_for, lerp, sample_latents
from digitlab.options import GeneratorOptions
from digitlab.schemas import (
    DigitPoint,
    ExplicitLatent,
    Frame,
    GeneratorLimits,
    InterpolateRequest,
    InterpolateResponse,
    LatentId,
    Point,
    SampleRequest,
)
from digitlab.service import Answer, Binary, Service, model_card

SEARCH_CHUNK = 256  # ids per forward when searching the report's generator (about one in ten is the digit)


def digit_chunk(n: int) -> int:
    """The first chunk of ids to draw for n digits from the digit generator: n and a margin for the few the
    classifier doubts, so that a request is one forward of the generator and of the classifier."""
    return n + n // 4 + 4


class Drawn(NamedTuple):
    """The images answering one sample request."""

    seed: int
    images: torch.Tensor  # (n, 1, 28, 28) in [-1, 1]
    indices: list[int] | None = None  # their latent indices; None means 0..n-1
    digit: int | None = None  # drawn by the digit generator, asked for this digit


class Endpoint(NamedTuple):
    """One end of an interpolation: its latent (100,) and, for the digit generator, its class weights (10,)."""

    z: torch.Tensor
    weights: torch.Tensor | None = None


class LatentPath(NamedTuple):
    """An interpolation's path: latents (steps, 100) and, for the digit generator, class weights (steps, 10)."""

    z: torch.Tensor
    weights: torch.Tensor | None = None


def one_hot(digit: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(digit), NUM_CLASSES).float()  # (10,)


@dataclass
class GeneratorService(Service):
    """The generators, the limits, and the classifier that accepts digits (and reads frames) where configured."""

    generator: nn.Module
    meta: dict[str, Any]
    options: GeneratorOptions
    classifier: nn.Module | None = None
    classifier_meta: dict[str, Any] = field(default_factory=dict)
    digit_generator: nn.Module | None = None
    digit_generator_meta: dict[str, Any] = field(default_factory=dict)
    needs_classifier: ClassVar[bool] = False  # interpolate labels every frame with it

    @classmethod
    def load(cls, checkpoint: Path, options: GeneratorOptions, device: torch.device | str) -> GeneratorService:
        """The generator at `checkpoint`; the classifier and digit generator the options name, next to it (the
        model directory of an unpacked archive, or weights/ here)."""
        service = cls(*load_model_and_meta(checkpoint, device, expect="generator"), options)
        if cls.needs_classifier and not options.classifier:
            raise ValueError(f"the {cls.kind} model needs a classifier: set handler.classifier")
        if options.classifier:
            service.classifier, service.classifier_meta = load_model_and_meta(
                checkpoint.parent / options.classifier, device, expect="classifier"
            )
        if options.digit_generator:
            service.digit_generator, service.digit_generator_meta = load_model_and_meta(
                checkpoint.parent / options.digit_generator, device, expect="generator"
            )
            if not service.digit_generator.conditional:
                raise ValueError(f"{options.digit_generator} is not a class-conditional generator")
        return service

    def limits(self) -> dict[str, int]:
        return GeneratorLimits(max_samples=self.options.max_samples, max_steps=self.options.max_steps).model_dump()

    def describe(self) -> dict[str, Any]:
        card = {"kind": self.kind, "limits": self.limits(), "generator": model_card(self.generator, self.meta)}
        if self.classifier is not None:
            card |= {
                "digits": {
                    "drawn_by": "digit_generator" if self.digit_generator is not None else "search",
                    "budget": self.options.digit_search_budget,
                    "min_confidence": self.options.digit_min_confidence,
                },
                "classifier": model_card(self.classifier, self.classifier_meta),
            }
        if self.digit_generator is not None:
            card["digit_generator"] = model_card(self.digit_generator, self.digit_generator_meta)
        return card

    # -- digits ----------------------------------------------------------------------------------------

    def find_digits(self, digit: int, n: int, seed: int, psi: float) -> tuple[list[LatentHit], bool]:
        """The first n ids of `seed` whose drawings the classifier reads as `digit` -> (hits, whether the digit
        generator drew them). LookupError when the budget is spent first."""
        options = self.options
        if self.digit_generator is not None:

            def draw(z: torch.Tensor) -> torch.Tensor:  # (b, 100) -> (b, 1, 28, 28), each told the digit
                return generate(self.digit_generator, z, torch.full((len(z),), digit))

            hits = find_latents_for_digit(
                draw, self.classifier, digit, n, seed, options.digit_search_budget, options.digit_min_confidence,
                SEARCH_CHUNK, psi, first_chunk=digit_chunk(n),
            )  # fmt: skip
            return hits, True
        hits = self.search(digit, n, seed, psi)
        return hits, False

    def search(self, digit: int, n: int, seed: int, psi: float) -> list[LatentHit]:
        """The first n ids of `seed` whose samples of the report's generator the classifier reads as `digit`."""
        return find_latents_for_digit(
            lambda z: generate(self.generator, z), self.classifier, digit, n, seed, self.options.digit_search_budget,
            self.options.digit_min_confidence, SEARCH_CHUNK, psi,
        )  # fmt: skip

    def too_few(self, digit: int, n: int, seed: int) -> InvalidRequest:
        return InvalidRequest(
            f"fewer than {n} of the {self.options.digit_search_budget} latents of seed {seed} are read as a {digit} "
            f"with confidence >= {self.options.digit_min_confidence}: ask for fewer images or try another seed",
            status=422,
        )

    def no_digit_point(self, point: DigitPoint) -> InvalidRequest:
        return InvalidRequest(
            f"no latent within {self.options.digit_search_budget} tries of seed {point.seed} is read as a "
            f"{point.digit} with confidence >= {self.options.digit_min_confidence}: try another seed, or give "
            'the point as {"seed", "index"}',
            status=422,
        )

    def no_digits(self) -> InvalidRequest:
        return InvalidRequest('this server does not draw digits on request: leave out "digit"')


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
            if isinstance(drawn, InvalidRequest):
                answers.append(drawn)
            elif request.format == "grid":
                answers.append(Binary(grid_png(drawn.images), "image/png", {"X-Seed": str(drawn.seed)}))
            else:
                answers.append(
                    sample_response(drawn.seed, drawn.images, request.format == "raw", drawn.indices, drawn.digit)
                )
        return answers

    def draw(self, requests: list[SampleRequest]) -> list[Drawn | InvalidRequest]:
        """The images of each request: one generator forward for every plain request of the batch; a request
        with a `digit` draws its own (one forward of the digit generator, or a bounded search) and may be
        refused (422).

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
                continue
            if self.classifier is None:
                out.append(self.no_digits())
                continue
            try:
                hits, conditional = self.find_digits(r.digit, r.n, seed, r.truncation)
            except LookupError:
                out.append(self.too_few(r.digit, r.n, seed))
                continue
            images = torch.stack([h.image for h in hits])  # (n, 1, 28, 28)
            out.append(Drawn(seed, images, [h.index for h in hits], r.digit if conditional else None))
        return out


class InterpolateService(GeneratorService):
    kind: ClassVar[str] = "interpolate"
    schema: ClassVar[type[BaseModel]] = InterpolateRequest
    needs_classifier: ClassVar[bool] = True

    def answer(self, requests: list[InterpolateRequest]) -> list[Answer]:
        """Paths first (a point whose digit cannot be found is that request's 422, before any frame is
        sent); then one forward per generator for every frame of every whole request, and a lazy stream for
        the others."""
        paths: list[LatentPath | InvalidRequest] = []
        for request in requests:
            try:
                paths.append(self.path(request))
            except InvalidRequest as err:
                paths.append(err)
        whole = [p for r, p in zip(requests, paths) if not isinstance(p, InvalidRequest) and not r.stream]
        rendered = iter(self.render_all(whole))
        answers: list[Answer] = []
        for request, path in zip(requests, paths):
            if isinstance(path, InvalidRequest):
                answers.append(path)
            elif request.stream:
                answers.append(self.stream(path))
            else:
                answers.append(self.whole(request, next(rendered)))
        return answers

    # -- the path --------------------------------------------------------------------------------------

    def path(self, request: InterpolateRequest) -> LatentPath:
        """The request's path: latents (steps, 100), first and last rows exactly its endpoints, and class
        weights (steps, 10) when both ends are digits the digit generator draws."""
        psi = request.truncation
        conditional = self.digit_generator is not None and all(
            isinstance(p, DigitPoint) or (isinstance(p, LatentId) and p.digit is not None)
            for p in (request.start, request.end)
        )
        start, end = (self.resolve(p, psi, conditional) for p in (request.start, request.end))
        z = interpolate(start.z, end.z, request.steps, request.method)
        weights = lerp(start.weights, end.weights, request.steps) if conditional else None
        return LatentPath(z, weights)

    def resolve(self, point: Point, psi: float, conditional: bool) -> Endpoint:
        """A request's point -> its latent (100,) [and class weights (10,)], truncated by `psi` when drawn by id
        or found by digit (an explicit z is the caller's own). A digit nobody can find is the client's 422."""
        if isinstance(point, ExplicitLatent):
            return Endpoint(torch.tensor(point.z, dtype=torch.float32))
        if isinstance(point, LatentId):
            if point.digit is None:
                return Endpoint(latent_for(point.seed, point.index, psi))
            if not conditional:
                raise InvalidRequest(
                    'an id with a "digit" is drawn by the digit generator: interpolate it only with another digit '
                    'point ({"digit"} or {"seed", "index", "digit"})'
                    if self.digit_generator is not None
                    else 'this server has no digit generator: give the point as {"seed", "index"}'
                )
            return Endpoint(latent_for(point.seed, point.index, psi), one_hot(point.digit))
        assert isinstance(point, DigitPoint)
        if self.classifier is None:
            raise self.no_digits()
        try:
            hits, drawn_by_digit_generator = self.find_digits(point.digit, 1, point.seed, psi)
        except LookupError:
            raise self.no_digit_point(point) from None
        if conditional:
            return Endpoint(hits[0].z, one_hot(point.digit))
        if drawn_by_digit_generator:  # the other end is not a digit: find this one among the report's samples
            try:
                return Endpoint(self.search(point.digit, 1, point.seed, psi)[0].z)
            except LookupError:
                raise self.no_digit_point(point) from None
        return Endpoint(hits[0].z)

    # -- rendering -------------------------------------------------------------------------------------

    def render(self, path: LatentPath) -> torch.Tensor:
        """A path -> its images (steps, 1, 28, 28), from the generator that path belongs to."""
        if path.weights is None:
            return generate(self.generator, path.z)
        return generate(self.digit_generator, path.z, path.weights)

    def render_all(self, paths: list[LatentPath]) -> list[torch.Tensor]:
        """Several whole paths with one forward per generator -> each path's images, in order."""
        out: list[torch.Tensor | None] = [None] * len(paths)
        for conditional in (False, True):
            chosen = [k for k, p in enumerate(paths) if (p.weights is not None) == conditional]
            if not chosen:
                continue
            z = torch.cat([paths[k].z for k in chosen])
            weights = torch.cat([paths[k].weights for k in chosen]) if conditional else None
            images = self.render(LatentPath(z, weights)).split([len(paths[k].z) for k in chosen])
            for k, im in zip(chosen, images):
                out[k] = im
        return out

    def whole(self, request: InterpolateRequest, images: torch.Tensor) -> InterpolateResponse | Binary:
        """All frames of one request at once, from its images (steps, 1, 28, 28): a GIF or the JSON frames."""
        if request.format == "gif":
            return Binary(gif_bytes(to_uint8(images)), "image/gif")
        return InterpolateResponse(method=request.method, frames=frames(images, self.classifier, 0, len(images)))

    def stream(self, path: LatentPath) -> Iterator[Frame]:
        """Frames of the path, each generated only when the previous one has been taken."""
        steps = len(path.z)
        for k in range(steps):
            weights = None if path.weights is None else path.weights[k : k + 1]
            yield frames(self.render(LatentPath(path.z[k : k + 1], weights)), self.classifier, k, steps)[0]
