"""The REST API contract, docs/api/openapi.json (OpenAPI 3.1), generated from the pydantic models.

    python -m tools.openapi            # make api: (re)write docs/api/openapi.json
    python -m tools.openapi --check    # exit 1 when the file is out of date

Every schema comes from `digitlab.schemas` (requests in validation mode, answers in serialization mode), every
path from the catalog (digitlab/catalog.py), and every limit a path states from where a worker reads it: the
palindrome lengths from the shipped checkpoint, the generator's from the model config's typed options. This
module only says which endpoint takes and returns which, with which media types and statuses.
tests/unit/test_api_contract.py fails when the file differs from what this module generates.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from digitlab import catalog
from digitlab.catalog import ServedModel
from digitlab.checkpoint import read_checkpoint
from digitlab.schemas import (
    ErrorResponse,
    Frame,
    InterpolateRequest,
    InterpolateResponse,
    LiveResponse,
    PalindromeRequest,
    PalindromeResponse,
    ReadyResponse,
    SampleRequest,
    SampleResponse,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api" / "openapi.json"
REQUESTS: list[type[BaseModel]] = [PalindromeRequest, SampleRequest, InterpolateRequest]
ANSWERS: list[type[BaseModel]] = [
    PalindromeResponse,
    SampleResponse,
    InterpolateResponse,
    Frame,
    ErrorResponse,
    ReadyResponse,
    LiveResponse,
]
TORCHSERVE = {"url": "http://127.0.0.1:8080", "description": "TorchServe's inference API (make serve; loopback only)"}
DOOR = {"url": "http://127.0.0.1:8090", "description": "the door (make door, make up): its own client keys"}
SUPERVISOR = {"url": "http://127.0.0.1:8083", "description": "the supervisor of make serve and of each replica"}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


def binary(media_type: str) -> dict[str, Any]:
    return {media_type: {"schema": {"type": "string", "contentMediaType": media_type}}}


def errors(*extra: int) -> dict[str, Any]:
    """The refusals every prediction can meet, each with the error body."""
    what = {
        "400": "invalid request (the message says what to fix and what is allowed), or TorchServe refused the key "
        "(`InvalidKeyException`)",
        "401": "the door refused the key (`Unauthorized`)",
        "404": "no such model or route",
        "413": "request body over 64 KiB",
        "422": "a digit search found too few latents of that digit (sample with `digit`, interpolate with a "
        "digit point)",
        "429": "the door's per-client limit (`Retry-After: 1`)",
        "500": "the server failed to answer this request (`InternalError`, naming the logged request id)",
        "503": "the model's queue is full, or (door) no replica is ready",
    }
    codes = ["400", "401", "404", "413", *map(str, extra), "429", "500", "503"]
    return {code: json_body(ErrorResponse, what[code]) for code in codes}


def prediction(
    summary: str,
    description: str,
    request: type[BaseModel],
    answers: dict[str, Any],
    extra_errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": description,
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref(request)}}},
            "responses": {"200": answers, **errors(*extra_errors)},
        }
    }


def served_limits(served: ServedModel) -> dict[str, int]:
    """The limits `served` is served with, read where a worker reads them: the palindrome lengths from its
    checkpoint's meta, the generator's from its model config's typed options."""
    if served.kind == "palindrome":
        meta = read_checkpoint(ROOT / served.weights)["meta"]
        return {"min_length": meta["min_length"], "max_length": meta["max_length"]}
    options = served.handler_options(ROOT)
    return {"max_samples": options.max_samples, "max_steps": options.max_steps}


def palindrome(served: ServedModel, limits: dict[str, int]) -> dict[str, Any]:
    return prediction(
        served.summary,
        f"The first T digits of a palindrome of T + 1 digits, T = {limits['min_length']} to {limits['max_length']} "
        "(the lengths its checkpoint was trained and measured on); the answer is the missing digit (the mirror of "
        "the first) with the probability of each of the ten.",
        PalindromeRequest,
        json_body(PalindromeResponse, "the missing digit"),
    )


def sample(served: ServedModel, limits: dict[str, int]) -> dict[str, Any]:
    answers = {
        "description": 'images with their latent ids (JSON), or one PNG grid with `"format": "grid"` or the header '
        "`Accept: image/png` (its seed in the `X-Seed` header)",
        "headers": {"X-Seed": {"description": "the seed of a PNG grid", "schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": ref(SampleResponse)}, **binary("image/png")},
    }
    return prediction(
        served.summary,
        f"n images (1 to {limits['max_samples']}), the same seed giving the same images. With `digit`, each image is "
        "drawn as that digit and its id carries the digit, so that the same id draws the same image again.",
        SampleRequest,
        answers,
        extra_errors=(422,),
    )


def interpolate(served: ServedModel, limits: dict[str, int]) -> dict[str, Any]:
    answers = {
        "description": 'every frame at once (JSON); an animated GIF with `"format": "gif"`; or, with `"stream": true`, '
        "a chunked answer of one JSON `Frame` per line, each sent as it is rendered (newline-delimited "
        "JSON, `application/x-ndjson` here; the server labels it `application/json`). A stream that "
        "fails after it began ends with an `ErrorResponse` line.",
        "content": {
            "application/json": {"schema": ref(InterpolateResponse)},
            "application/x-ndjson": {"schema": ref(Frame)},
            **binary("image/gif"),
        },
    }
    return prediction(
        served.summary,
        f"2 to {limits['max_steps']} frames from `start` to `end`, each with the digit the MNIST classifier reads "
        "in it; between two digits the frames turn from one into the other.",
        InterpolateRequest,
        answers,
        extra_errors=(422,),
    )


PATHS = {"palindrome": palindrome, "sample": sample, "interpolate": interpolate}  # by the served model's kind


def health(summary: str, description: str, server: dict[str, str], model: type[BaseModel]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": description,
            "servers": [server],
            "security": [],
            "responses": {"200": json_body(model, "ready / live"), "503": json_body(model, "not ready / dead")},
        }
    }


def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in REQUESTS] + [(m, "serialization") for m in ANSWERS],
        ref_template="#/components/schemas/{model}",
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "digitlab",
            "version": version,
            "summary": "Palindrome digit predictor and MNIST GAN, served by TorchServe",
            "description": "Generated from digitlab/schemas.py, digitlab/catalog.py and the shipped checkpoints by "
            "`make api` (tools/openapi.py): do not edit. "
            "gRPC carries the same JSON: see docs/api/grpc.md.",
        },
        "servers": [TORCHSERVE, DOOR],
        "security": [{"bearer": []}],
        "paths": {
            **{f"/predictions/{m.name}": PATHS[m.kind](m, served_limits(m)) for m in catalog.MODELS},
            "/ready": health(
                "Readiness (supervisor)",
                "200 only when every worker of every model is READY and has answered a canary request; no key.",
                SUPERVISOR,
                ReadyResponse,
            ),
            "/live": health("Liveness (supervisor)", "200 while TorchServe runs; no key.", SUPERVISOR, LiveResponse),
            "/health": health(
                "Readiness (door)",
                'The supervisor\'s readiness, as `{"status": ...}` only; no key.',
                DOOR,
                ReadyResponse,
            ),
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`: TorchServe's inference key (`.ts/key_file.json`, "
                    "`digitlab token`), or through the door one of its client keys "
                    "(`.door/api_keys`, `$DIGITLAB_API_KEY`).",
                }
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run make api", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
