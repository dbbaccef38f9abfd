"""Request/response schemas and their limits: the contract shared by handlers, clients and tests.

Every field a user sends is bounded here. `parse_request` turns any bad input into an
`InvalidRequest` whose message says what is wrong and what is allowed; handlers map it to a 4xx.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from digitlab.constants import NUM_CLASSES
from digitlab.palindrome import is_palindrome_prefix

# The served palindrome model answers T in [min_length, max_length] (from its checkpoint); this is
# the hard ceiling any model may declare, so a request can never make the server loop for long.
PALINDROME_MAX_LENGTH_CEILING = 1000


class InvalidRequest(ValueError):
    """A request the server refuses: `status` is the HTTP code (4xx), `message` says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {"code": self.status, "type": "InvalidRequest", "message": self.message}


class LengthRange(BaseModel):
    """The palindrome lengths a model serves; passed as validation context."""

    min_length: int
    max_length: int


class PalindromeRequest(BaseModel):
    """`{"digits": [d1, ..., dT]}` or `{"digits": "d1...dT"}`: the first T digits of a palindrome of T + 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digits: list[int] = Field(description="digits 0-9: the palindrome without its last digit")

    @field_validator("digits", mode="before")
    @classmethod
    def _split_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > PALINDROME_MAX_LENGTH_CEILING or not value.isascii() or not value.isdigit():
                raise ValueError("a digit string must hold only the characters 0-9, e.g. \"1232\"")
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
            raise ValueError(
                f"got {len(digits)} digits; this model accepts {limits.min_length} to {limits.max_length}"
            )
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


def decode_json(body: Any) -> Any:
    """TorchServe hands over parsed JSON, or raw bytes when the body was not JSON (or sent without its content type)."""
    if isinstance(body, (bytes, bytearray)):
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidRequest(f"the body is not valid JSON ({err}); send e.g. {{\"digits\": [1, 2, 3, 2]}}")
    return body


def parse_request(schema: type[BaseModel], body: Any, context: dict[str, Any] | None = None) -> BaseModel:
    """Raw request body -> validated `schema` instance, or `InvalidRequest` with a readable message."""
    data = decode_json(body)
    if not isinstance(data, dict):
        fields = ", ".join(schema.model_fields)
        raise InvalidRequest(f"the body must be a JSON object with the field(s) {fields}; got {type(data).__name__}")
    try:
        return schema.model_validate(data, context=context)
    except ValidationError as err:
        raise InvalidRequest(_describe(err)) from None


def _describe(err: ValidationError) -> str:
    """pydantic's errors as one line: `field: what is wrong` for each."""
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
