"""Request/response schemas and their limits: the contract shared by handlers, clients and tests.

Every field a user sends is bounded here. `parse_request` turns any bad input into an
`InvalidRequest` whose message says what is wrong and what is allowed; handlers map it to a 4xx.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from digitlab.constants import LATENT_DIM, MAX_SAMPLES, MAX_SEED, MAX_STEPS, NUM_CLASSES, TRUNCATION_OFF
from digitlab.digits import is_palindrome_prefix
from digitlab.errors import InvalidRequest

# The served palindrome model answers T in [min_length, max_length] (from its checkpoint); this is
# the hard ceiling any model may declare, so a request can never make the server loop for long.
PALINDROME_MAX_LENGTH_CEILING = 1000


class LengthRange(BaseModel):
    """The palindrome lengths a model serves; passed as validation context."""

    min_length: int
    max_length: int


def _digits_json_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema of `digits` as a client may send it: a list of digits, or a string of them."""
    description = schema.get("description")
    schema.clear()
    schema.update(
        description=description,
        anyOf=[
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 9},
                "minItems": 1,
                "maxItems": PALINDROME_MAX_LENGTH_CEILING,
            },
            {"type": "string", "pattern": "^[0-9]+$", "minLength": 1, "maxLength": PALINDROME_MAX_LENGTH_CEILING},
        ],
    )


class PalindromeRequest(BaseModel):
    """`{"digits": [d1, ..., dT]}` or `{"digits": "d1...dT"}`: the first T digits of a palindrome of T + 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digits: list[int] = Field(
        description="digits 0-9: the palindrome without its last digit",
        json_schema_extra=lambda schema: _digits_json_schema(schema),
    )

    @field_validator("digits", mode="before")
    @classmethod
    def _split_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > PALINDROME_MAX_LENGTH_CEILING or not value.isascii() or not value.isdigit():
                raise ValueError('a digit string must hold only the characters 0-9, e.g. "1232"')
            return [int(c) for c in value]
        if isinstance(value, list):
            if len(value) > PALINDROME_MAX_LENGTH_CEILING:
                raise ValueError(f"at most {PALINDROME_MAX_LENGTH_CEILING} digits")
            # bools are ints to Python; "digits": [true] is a client bug, not a digit.
            if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise ValueError("every digit must be an integer 0-9 (not a string, float or bool)")
        return value

    @field_validator("digits")
    @classmethod
    def _check(cls, digits: list[int], info: ValidationInfo) -> list[int]:
        limits = LengthRange.model_validate(info.context) if info.context else None
        if limits and not limits.min_length <= len(digits) <= limits.max_length:
            raise ValueError(f"got {len(digits)} digits; this model accepts {limits.min_length} to {limits.max_length}")
        if not digits:
            raise ValueError("no digits given")
        bad = [d for d in digits if not 0 <= d <= 9]
        if bad:
            raise ValueError(f"digits must be 0-9, got {bad[:5]}")
        if not is_palindrome_prefix(digits):
            raise ValueError(
                "not the first T digits of a palindrome of T + 1 digits: digits[1:] must read the same "
                f"backwards, but {digits[1:]} does not"
            )
        return digits


class PalindromeResponse(BaseModel):
    digit: int = Field(ge=0, le=9)
    probabilities: list[float] = Field(min_length=NUM_CLASSES, max_length=NUM_CLASSES)
    length: int
    model: Literal["lstm", "rnn"]


JSON_EXAMPLE = '{"digits": [1, 2, 3, 2]}'


def parse_request(schema: type[BaseModel], body: Any, context: dict[str, Any] | None = None) -> BaseModel:
    """Raw request body -> validated `schema` instance, or `InvalidRequest` with a readable message.

    A body of bytes or text is parsed and validated in one pass by pydantic's JSON parser, which refuses by
    itself everything hostile a body can hold: invalid UTF-8, nesting deeper than 200 levels (so Python's
    recursion limit is never what stops it), integer literals out of range, and anything that is not JSON.
    A body TorchServe already decoded (a dict) is validated as it is.
    """
    try:
        if isinstance(body, (bytes, bytearray, str)):
            return schema.model_validate_json(body, context=context)
        return schema.model_validate(body, context=context)
    except ValidationError as err:
        raise InvalidRequest(_describe(err, schema)) from None


def _describe(err: ValidationError, schema: type[BaseModel]) -> str:
    """pydantic's errors as one line: `field: what is wrong` for each, or what is wrong with the body as a whole."""
    parts = []
    for e in err.errors(include_url=False):
        if e["type"] == "json_invalid":
            detail = e["msg"].removeprefix("Invalid JSON: ")
            return f"the body is not valid JSON ({detail[:200]}); requests are flat JSON such as {JSON_EXAMPLE}"
        if e["type"] == "model_type" and not e["loc"]:
            fields = ", ".join(schema.model_fields)
            return f"the body must be a JSON object with the field(s) {fields}; got {type(e['input']).__name__}"
        where = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- generator

MAX_LATENT_ABS = 10.0  # an explicit z beyond this is not a plausible standard-normal latent
POINT_HELP = '{"seed": s, "index": i (, "digit": d)}, {"z": [100 floats]} or {"digit": 0-9, "seed": s (optional)}'


def truncation_field() -> Any:
    """`truncation`: psi in (0, 1], the latent truncation trick (digitlab.latent); 1, the default, is off."""
    return Field(
        default=TRUNCATION_OFF,
        gt=0,
        le=TRUNCATION_OFF,
        strict=True,
        description="latent truncation psi, 0 < psi <= 1: below 1 latents drawn by id or digit are pulled toward "
        "the mean (cleaner, less varied digits); 1 (default) is off. An explicit z is used as given.",
    )


class GeneratorLimits(BaseModel):
    """Per-model limits from the model config (`handler:` section); passed as validation context."""

    max_samples: int = MAX_SAMPLES
    max_steps: int = MAX_STEPS


def _limits(info: ValidationInfo) -> GeneratorLimits:
    return GeneratorLimits.model_validate(info.context or {})


class LatentId(BaseModel):
    """A latent by id: the same id always names the same 100 numbers (see `digitlab.latent.latent_for`).

    With `digit`, the id names what the digit generator draws from those numbers when asked for that digit: the
    id a `sample` request with a `digit` answers with, so that its image can be drawn again (or interpolated).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = Field(ge=0, le=MAX_SEED, strict=True)
    index: int = Field(ge=0, le=MAX_SEED, strict=True)
    digit: int | None = Field(
        default=None,
        ge=0,
        le=9,
        strict=True,
        exclude_if=lambda digit: digit is None,  # ids of the report's generator stay {"seed", "index"}
        description="drawn by the digit generator, asked for this digit",
    )


class ExplicitLatent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    z: list[float] = Field(min_length=LATENT_DIM, max_length=LATENT_DIM, description=f"{LATENT_DIM} finite floats")

    @field_validator("z")
    @classmethod
    def _finite_and_sane(cls, z: list[float]) -> list[float]:
        if not all(math.isfinite(v) for v in z):
            raise ValueError("every value of z must be a finite number (no NaN or infinity)")
        if max(abs(v) for v in z) > MAX_LATENT_ABS:
            raise ValueError(f"values of z must lie within ±{MAX_LATENT_ABS} (a standard normal rarely leaves ±5)")
        return z


class DigitPoint(BaseModel):
    """ "a latent whose sample the classifier reads as `digit`", found by a bounded, seeded search."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    digit: int = Field(ge=0, le=9, strict=True)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, strict=True)


Point = LatentId | ExplicitLatent | DigitPoint


def _point(value: Any) -> Any:
    """Pick the point's kind by its keys, so an error talks about that kind and not all three."""
    if not isinstance(value, dict):
        raise ValueError(f"a point is an object: {POINT_HELP}")
    for key, kind in (("z", ExplicitLatent), ("index", LatentId), ("digit", DigitPoint)):
        if key in value:
            return kind.model_validate(value)
    raise ValueError(f"unknown point {sorted(value)}: use {POINT_HELP}")


class SampleRequest(BaseModel):
    """`{"n": 1..max_samples, "seed": optional int, "format": "png" | "grid" | "raw", "digit": optional 0-9,
    "truncation": optional psi in (0, 1]}`.

    With `digit`, the images are the first n latent ids of the seed whose samples the MNIST classifier
    reads as that digit with confidence >= the model config's `digit_min_confidence`, found within
    `digit_search_budget` ids (else 422).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(default=1, ge=1, strict=True)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, strict=True)
    format: Literal["png", "grid", "raw"] = "png"
    digit: int | None = Field(default=None, ge=0, le=9, strict=True, description="only images read as this digit")
    truncation: float = truncation_field()

    @field_validator("n")
    @classmethod
    def _n_within_limit(cls, n: int, info: ValidationInfo) -> int:
        if n > (limit := _limits(info).max_samples):
            raise ValueError(f"at most {limit} samples per request, got {n}")
        return n


class InterpolateRequest(BaseModel):
    """Frames from `start` to `end`: `{"start": P, "end": P, "steps", "method", "format", "stream", "truncation"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: Point
    end: Point
    steps: int = Field(default=16, ge=2, strict=True)
    method: Literal["slerp", "lerp"] = "slerp"
    format: Literal["png", "gif"] = "png"
    truncation: float = truncation_field()
    # Strict: only the JSON literal true streams. A unary gRPC call that streams stalls its worker
    # (SECURITY.md), so "yes", 1 or "true" must be refused, never taken for true.
    stream: bool = Field(
        default=False, strict=True, description="one message per frame (gRPC StreamPredictions or chunked HTTP)"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        return _point(value)

    @field_validator("steps")
    @classmethod
    def _steps_within_limit(cls, steps: int, info: ValidationInfo) -> int:
        if steps > (limit := _limits(info).max_steps):
            raise ValueError(f"at most {limit} steps per interpolation, got {steps}")
        return steps

    @model_validator(mode="after")
    def _gif_is_whole(self) -> InterpolateRequest:
        if self.stream and self.format == "gif":
            raise ValueError('a GIF is one file and cannot be streamed: use "format": "png" with "stream": true')
        return self


class ImageOut(BaseModel):
    id: LatentId | None = None  # None for frames between two points: they have no id of their own
    png: str | None = None  # base64 PNG, 28 x 28 grayscale
    pixels: list[list[int]] | None = None  # "raw": 28 rows of 28 values 0-255


class SampleResponse(BaseModel):
    seed: int
    images: list[ImageOut]


class Frame(BaseModel):
    index: int
    of: int
    png: str  # base64 PNG
    digit: int  # what the MNIST classifier reads in the frame
    confidence: float
    generated_at: float  # server clock (Unix seconds) when the frame was rendered: lets clients see streaming


class InterpolateResponse(BaseModel):
    method: str
    frames: list[Frame]


# --------------------------------------------------------------------------- answers beyond the models
# What the product answers besides a prediction: the error body and the health endpoints. Described
# here so the OpenAPI document (docs/api/openapi.json, `make api`) and the clients share one definition.


class ErrorResponse(BaseModel):
    """The body of every refusal (4xx) and failure (500): `InvalidRequest.to_json()`, the handler's
    `InternalError`, TorchServe's own errors (e.g. `InvalidKeyException`, `ServiceUnavailableException`)
    and the door's (`Unauthorized`, `NotFound`, `RequestTooLarge`, `TooManyRequests`)."""

    code: int = Field(description="the HTTP status, repeated")
    type: str = Field(
        description='"InvalidRequest" or "InternalError" from a handler; TorchServe and the door use their own names'
    )
    message: str = Field(description="what is wrong and what is allowed")
    request_id: str | None = Field(
        default=None,
        description="the request's id (the client's X-Request-Id when it was 1-128 characters of A-Z a-z 0-9 . _ -, "
        "else one the server made), as every log line about the request names it; also the X-Request-Id header",
    )


class ReadyResponse(BaseModel):
    """The supervisor's `GET /ready` (200 when every worker of every model is READY and has answered a canary,
    else 503); the door's `GET /health` has only `status`."""

    status: Literal["ready", "not ready"]
    models: dict[str, Literal["ready", "not ready", "restarting"]] | None = Field(
        default=None, description="per served model (supervisor only)"
    )


class LiveResponse(BaseModel):
    """The supervisor's `GET /live`: 200 while TorchServe runs ("live") or, after it ended unasked, while the
    supervisor starts it again ("restarting"); 503 ("dead") once the supervisor has given up."""

    status: Literal["live", "restarting", "dead"]
