"""`Client`: one interface to the served models, over REST (`RestClient`) or gRPC (`GrpcClient`).

A client keeps its connection (a requests.Session, a gRPC channel) open until `close()` or the end of
its `with` block. Every call:
- sends the key given, else reads it from a key file (TorchServe's `key_file.json` or the front door's
  `api_keys`, newest line) or the environment ($TORCHSERVE_TOKEN, $TORCHSERVE_KEY_FILE), and when the
  server refuses a key that was read, reads it again and retries once (keys rotate);
- retries a call that reached no server (connection refused or reset) a bounded number of times with
  exponential backoff: every request is idempotent (seeded), so sending it again is safe;
- returns typed answers (the pydantic models of `digitlab.schemas`), or the raw JSON / bytes, or an
  iterator of frames for a streamed interpolation.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from digitlab.schemas import Frame, InterpolateResponse, PalindromeResponse, SampleResponse

from .auth import call_with_fresh_key, find_token, read_any_key_file
from .errors import ServerError, Unreachable

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0  # seconds per call (a whole stream counts as one call)
DEFAULT_RETRIES = 2  # extra attempts when no server answered at all
DEFAULT_BACKOFF = 0.2  # seconds before the first retry, doubled each time
ERROR_TYPES = {"InvalidRequest", "InternalError"}  # the `type` of a handler's error object
STREAMING_MODELS = {"interpolate"}  # models whose handler sends one message per frame when asked

Point = dict[str, Any]  # {"digit": d[, "seed": s]}, {"seed": s, "index": i} or {"z": [100 floats]}


class Client(ABC):
    """What every transport offers. Subclasses implement `_json`, `_bytes` and `_messages` for one attempt."""

    def __init__(
        self,
        token: str | None = None,
        key_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        self.token = token  # explicit: sent as given, never re-read ("" sends no key)
        self.key_file = Path(key_file) if key_file is not None else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    # -- connection ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    def find_key(self) -> str | None:
        """The key to send when none was given: read anew on each call, so rotations are followed."""
        if self.key_file is not None:
            return read_any_key_file(self.key_file)
        return find_token()

    @staticmethod
    @abstractmethod
    def is_auth_error(err: Exception) -> bool: ...

    def _call(self, attempt: Callable[[str | None], T]) -> T:
        """`attempt(key)` with a fresh key after an authentication refusal, and retries while unreachable."""
        for retry in range(self.retries + 1):
            try:
                return call_with_fresh_key(attempt, self.token, self.is_auth_error, find=self.find_key)
            except Unreachable:
                if retry == self.retries:
                    raise
                time.sleep(self.backoff * 2**retry)
        raise AssertionError("unreachable")

    # -- one attempt, per transport ----------------------------------------------------------------

    @abstractmethod
    def _bytes(self, model: str, payload: dict[str, Any], key: str | None, accept: str) -> bytes: ...

    @abstractmethod
    def _messages(self, model: str, payload: dict[str, Any], key: str | None) -> Iterator[dict[str, Any]]:
        """The decoded messages of one streamed answer; the first is awaited before returning (so that a
        refusal raises here, where it can be retried)."""

    # -- untyped calls -------------------------------------------------------------------------------

    def predict_bytes(self, model: str, payload: dict[str, Any], accept: str = "*/*") -> bytes:
        """One answer's raw bytes: a PNG grid, a GIF, or JSON."""
        return self._call(lambda key: self._bytes(model, payload, key, accept))

    def predict(self, model: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One answer, decoded JSON."""
        return decode_message(self.predict_bytes(model, payload))

    def stream(self, model: str, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Each decoded message as it arrives; adds `"stream": true` for models that take it (interpolate)."""
        body = {**payload, "stream": True} if model in STREAMING_MODELS else payload
        yield from self._call(lambda key: self._messages(model, body, key))

    # -- typed calls ---------------------------------------------------------------------------------

    def palindrome(self, digits: list[int] | str, model: str = "palindrome") -> PalindromeResponse:
        """The missing last digit of a palindrome whose first T digits are `digits`."""
        return PalindromeResponse.model_validate(self.predict(model, {"digits": digits}))

    def sample(
        self, n: int = 1, seed: int | None = None, digit: int | None = None, format: Literal["png", "raw"] = "png"
    ) -> SampleResponse:
        """n images with their latent ids (base64 PNG, or raw pixels)."""
        return SampleResponse.model_validate(self.predict("sample", _sample_payload(n, seed, digit, format)))

    def sample_grid(self, n: int = 1, seed: int | None = None, digit: int | None = None) -> bytes:
        """n images as one PNG grid (file bytes)."""
        return self.predict_bytes("sample", _sample_payload(n, seed, digit, "grid"), accept="image/png")

    def interpolate(
        self, start: Point, end: Point, steps: int = 16, method: Literal["slerp", "lerp"] = "slerp"
    ) -> InterpolateResponse:
        """Every frame at once."""
        payload = {"start": start, "end": end, "steps": steps, "method": method}
        return InterpolateResponse.model_validate(self.predict("interpolate", payload))

    def interpolate_gif(
        self, start: Point, end: Point, steps: int = 16, method: Literal["slerp", "lerp"] = "slerp"
    ) -> bytes:
        """The frames as one animated GIF, rendered by the server (file bytes)."""
        payload = {"start": start, "end": end, "steps": steps, "method": method, "format": "gif"}
        return self.predict_bytes("interpolate", payload, accept="image/gif")

    def interpolate_stream(
        self, start: Point, end: Point, steps: int = 16, method: Literal["slerp", "lerp"] = "slerp"
    ) -> Iterator[Frame]:
        """Frames as they are rendered: a plain iterator."""
        payload = {"start": start, "end": end, "steps": steps, "method": method}
        for message in self.stream("interpolate", payload):
            yield Frame.model_validate(message)


def decode_message(data: bytes | str) -> Any:
    """A JSON answer or message -> its value, raising a handler's error object as `ServerError`.

    Over gRPC, TorchServe 0.12 drops the status a handler sets, so a refusal arrives as an ordinary
    message holding the error object; a stream that fails after it began ends with one, over REST too.
    """
    value = json.loads(data)
    if isinstance(value, dict) and value.get("type") in ERROR_TYPES and set(value) == {"code", "type", "message"}:
        raise ServerError(value["code"], value["message"])
    return value


def _sample_payload(n: int, seed: int | None, digit: int | None, format: str) -> dict[str, Any]:
    optional = {k: v for k, v in (("seed", seed), ("digit", digit)) if v is not None}
    return {"n": n, **optional, "format": format}
