"""TorchServe handler for the GAN generator: `sample` and `interpolate` (model config `handler.endpoint`).

Streaming: an interpolation with `"stream": true` sends one message per frame as soon as it is
generated (gRPC StreamPredictions, or chunked HTTP); without it, all frames come in one answer, which
is what a unary gRPC `Predictions` call needs.
"""

from __future__ import annotations

from typing import Any

import torch
from ts.handler_utils.utils import send_intermediate_predict_response

from digitlab.answers import Drawn, sample_images
from digitlab.checkpoint import load_model
from digitlab.generation import (
    DigitSearch,
    frames,
    generate,
    interpolation_latents,
    sample_response,
)
from digitlab.imaging import gif_bytes, grid_png, to_uint8
from digitlab.schemas import (
    GeneratorLimits,
    InterpolateRequest,
    InterpolateResponse,
    InvalidRequest,
    SampleRequest,
    parse_request,
)

from handlers.common import JsonHandler, log

ENDPOINTS = {"sample": SampleRequest, "interpolate": InterpolateRequest}


class GeneratorHandler(JsonHandler):
    def setup(self) -> None:
        self.endpoint = self.options.get("endpoint", "sample")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"handler.endpoint must be one of {list(ENDPOINTS)}, got {self.endpoint!r}")
        self.schema = ENDPOINTS[self.endpoint]
        self.limits = GeneratorLimits(**{k: v for k, v in self.options.items() if k in GeneratorLimits.model_fields})
        self.search = DigitSearch(self.options.get("digit_search_budget", DigitSearch.budget),
                                  self.options.get("digit_min_confidence", DigitSearch.min_confidence))
        log.info("%s limits: %s, %s", self.endpoint, self.limits, self.search)  # defaults included
        self.generator = load_model(self.serialized_file, self.device, expect="generator")
        self.classifier = None
        if self.endpoint == "interpolate" or self.options.get("classifier"):  # finds digits (and labels frames)
            self.classifier = load_model(self.model_dir / self.options.get("classifier", "classifier.pt"),
                                         self.device, expect="classifier")

    def validation_context(self) -> dict[str, int]:
        return self.limits.model_dump()

    def decode(self, body: Any, headers: dict[str, Any]) -> SampleRequest | InterpolateRequest:
        request = parse_request(self.schema, body, self.validation_context())
        if self.endpoint == "sample" and "image/png" in str(headers.get("accept", "")):
            request = request.model_copy(update={"format": "grid"})  # `curl -H "Accept: image/png" -o grid.png`
        return request

    # -- sample ----------------------------------------------------------------------------------

    def predict(self, requests: list[SampleRequest]) -> list[Drawn | InvalidRequest]:
        return sample_images(self.generator, requests, self.classifier, self.search)  # one forward for plain requests

    def encode(self, output: Any, request: Any, idx: int, context) -> Any:
        if isinstance(output, InvalidRequest):  # a digit search that spent its budget
            return self.refuse(output, idx, context)
        if isinstance(request, SampleRequest):
            if request.format == "grid":
                context.set_response_content_type(idx, "image/png")
                context.set_response_header(idx, "X-Seed", str(output.seed))
                return grid_png(output.images)
            output = sample_response(output.seed, output.images, raw=request.format == "raw", indices=output.indices)
        elif request.format == "gif":
            context.set_response_content_type(idx, "image/gif")
            return gif_bytes(to_uint8(output))
        else:
            output = InterpolateResponse(method=request.method, frames=frames(output, self.classifier, 0, len(output)))
        return super().encode(output, request, idx, context)

    # -- interpolate -------------------------------------------------------------------------------

    def handle(self, batch: list[dict[str, Any]], context) -> list[Any]:
        if self.endpoint == "sample":
            return super().handle(batch, context)
        responses, valid = self.decode_batch(batch, context)
        paths = []  # (idx, (request, latents (steps, 100))): a request whose endpoints cannot be found is refused
        for idx, request in valid:
            [z] = self.guarded(lambda reqs: [self.latents(r) for r in reqs], [(idx, request)], responses, context)
            if z is not None:
                paths.append((idx, (request, z)))
        whole = [(idx, path) for idx, path in paths if not path[0].stream]
        if whole:  # one forward for every frame of every non-streamed request
            images = self.guarded(self.render, whole, responses, context)
            for (idx, (request, _)), imgs in zip(whole, images):
                if imgs is not None:
                    responses[idx] = self.encode_or_fail(imgs, request, idx, context)
        for idx, (request, z) in paths:
            if request.stream:
                responses[idx] = self.stream(idx, z, context)
        self.mark_final(batch, context)
        return responses

    def latents(self, request: InterpolateRequest) -> torch.Tensor:
        return interpolation_latents(request, self.generator, self.classifier, self.search)

    def render(self, paths: list[tuple[InterpolateRequest, torch.Tensor]]) -> list[torch.Tensor]:
        """[(request, latents (steps_i, 100))] -> images (steps_i, 1, 28, 28) each, from one forward."""
        zs = [z for _, z in paths]
        return list(generate(self.generator, torch.cat(zs)).split([len(z) for z in zs]))

    def stream(self, idx: int, z: torch.Tensor, context) -> str:
        """Send frames 0..steps-2 as they are generated; return the last, which TorchServe sends as final.

        An unexpected error ends the stream with the error object as its last message (the status line
        of a stream that has begun cannot change).
        """
        context.set_response_content_type(idx, "application/json")
        try:
            for k in range(len(z)):
                frame = frames(generate(self.generator, z[k : k + 1]), self.classifier, k, len(z))[0]
                message = frame.model_dump_json() + "\n"  # NDJSON over HTTP: a client splits on newlines
                if k == len(z) - 1:
                    return message
                send_intermediate_predict_response({idx: message}, {idx: context.request_ids[idx]},
                                                   "Intermediate Prediction success", 200, context)
        except Exception:  # noqa: BLE001 - one stream's failure is its own
            return self.fail(idx, context) + "\n"
        raise AssertionError("an interpolation has at least 2 steps")
