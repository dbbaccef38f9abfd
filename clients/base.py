"""`Client`: one interface to the served models, over REST (`RestClient`) or gRPC (`GrpcClient`).

A client keeps its connection (a requests.Session, a gRPC channel) open until `close()` or the end of
its `with` block. Every call:
- sends the key given, else reads it from a key file (TorchServe's `key_file.json` or the door's
  `api_keys`, newest line) or the environment ($TORCHSERVE_TOKEN, $TORCHSERVE_KEY_FILE);
- follows ONE retry policy, `Client._call`: a call that reached no server (connection refused or reset)
  is retried a bounded number of times with exponential backoff and jitter (every request is idempotent,
  seeded, so sending it again is safe; the jitter keeps the clients of a restarted server from coming back
  in lockstep); a key the server refuses is read again and the call retried once, when the
  key was read (not given) and has changed since (keys rotate); a refusal that says the server behind a
  door refused the door's key (gRPC PERMISSION_DENIED, `is_upstream_key_refusal`) is retried once after
  KEY_REFUSAL_RETRY_S, whatever key the client holds (TorchServe renewed its key a moment before the door read it);
- names each attempt by a fresh request id (`new_request_id`: REST's X-Request-Id, gRPC's x-request-id),
  which the server logs the request by; `last_request_id` and `ServerError.request_id` say the id it answered
  with (the one sent when it named none);
- returns typed answers (the pydantic models of `digitlab.schemas`), or the raw JSON / bytes, or an
  iterator of frames for a streamed interpolation.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from digitlab.catalog import STREAMING
from digitlab.errors import is_handler_error
from digitlab.keyfiles import read_any_key
from digitlab.schemas import Frame, InterpolateResponse, PalindromeResponse, SampleResponse

from .auth import find_token
from .errors import ServerError, Unreachable

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8080"  # TorchServe's REST inference API (`make serve`)
DEFAULT_TARGET = "127.0.0.1:7070"  # its gRPC inference API
DEFAULT_TIMEOUT = 10.0  # seconds per call (a whole stream counts as one call)
DEFAULT_RETRIES = 2  # extra attempts when no server answered at all
DEFAULT_BACKOFF = 0.2  # seconds before the first retry, doubled each time
KEY_REFUSAL_RETRY_S = 0.05  # before the one retry of a call whose key the server behind a door refused

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
        self.rng = random.Random()  # this client's jitter, its own stream: no two clients wait alike
        self.backoff = backoff
        self.last_request_id: str | None = None  # the id of the last answer (or refusal), as the server logged it

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
            return read_any_key(self.key_file)
        return find_token()

    @staticmethod
    @abstractmethod
    def is_auth_error(err: Exception) -> bool: ...

    @staticmethod
    def is_upstream_key_refusal(err: Exception) -> bool:
        """Whether `err` is TorchServe refusing a key (not a door refusing the client's): worth one retry even with
        the same key, since a door reads TorchServe's renewed key per request. REST: never (the door itself
        retries a refused key); gRPC: PERMISSION_DENIED (the door's own refusal is UNAUTHENTICATED)."""
        return False

    def _call(self, attempt: Callable[[str | None], T]) -> T:
        """`attempt(key)` under the client's one retry policy.

        - No server answered (`Unreachable`): up to `retries` more attempts, the n-th after `retry_delay`:
          `backoff * 2**n` seconds, of which a random half ("equal jitter").
        - The server refused the key (`is_auth_error`) and the key was read, not given: read it again and,
          when it changed (TorchServe or the door rotated it and rewrote the file), retry once with the new
          one. An explicit key (`token`, "" included) is sent as given and never re-read.
        - The refusal is TorchServe's behind a door (`is_upstream_key_refusal`: gRPC PERMISSION_DENIED) and the
          client's key did not change: retry once, the same key, after KEY_REFUSAL_RETRY_S. TorchServe refuses
          its old key the moment it renews it, and the door reads the new one per request: a call that met
          that moment passes on its second try. One retry per call for a refused key, whichever rule applies.
        Any other refusal is raised at once: sending the same request again would get the same answer.
        """
        explicit = self.token is not None
        key = self.token if explicit else self.find_key()
        reread = False  # at most one retry per call for a refused key
        failures = 0
        while True:
            try:
                return attempt(key)
            except Unreachable:
                if failures == self.retries:
                    raise
                time.sleep(retry_delay(self.backoff, failures, self.rng))
                failures += 1
                if not explicit:
                    key = self.find_key()  # a restarted server may have written new keys
            except ServerError as err:
                if reread or not self.is_auth_error(err):
                    raise
                reread = True
                fresh = key if explicit else self.find_key()
                if fresh != key:
                    key = fresh  # rotated and rewritten: the new key at once
                elif self.is_upstream_key_refusal(err):
                    time.sleep(KEY_REFUSAL_RETRY_S)
                else:
                    raise

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
        body = {**payload, "stream": True} if model in STREAMING else payload
        yield from self._call(lambda key: self._messages(model, body, key))

    # -- typed calls ---------------------------------------------------------------------------------

    def palindrome(self, digits: list[int] | str, model: str = "palindrome") -> PalindromeResponse:
        """The missing last digit of a palindrome whose first T digits are `digits`."""
        return PalindromeResponse.model_validate(self.predict(model, {"digits": digits}))

    def sample(
        self,
        n: int = 1,
        seed: int | None = None,
        digit: int | None = None,
        format: Literal["png", "raw"] = "png",
        truncation: float | None = None,
    ) -> SampleResponse:
        """n images with their latent ids (base64 PNG, or raw pixels); `truncation` psi in (0, 1] pulls the
        latents toward the mean (the server's default, 1, is off)."""
        payload = _sample_payload(n, seed, digit, format, truncation)
        return SampleResponse.model_validate(self.predict("sample", payload))

    def sample_grid(
        self, n: int = 1, seed: int | None = None, digit: int | None = None, truncation: float | None = None
    ) -> bytes:
        """n images as one PNG grid (file bytes)."""
        payload = _sample_payload(n, seed, digit, "grid", truncation)
        return self.predict_bytes("sample", payload, accept="image/png")

    def interpolate(
        self,
        start: Point,
        end: Point,
        steps: int = 16,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: float | None = None,
    ) -> InterpolateResponse:
        """Every frame at once."""
        payload = _interpolate_payload(start, end, steps, method, truncation)
        return InterpolateResponse.model_validate(self.predict("interpolate", payload))

    def interpolate_gif(
        self,
        start: Point,
        end: Point,
        steps: int = 16,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: float | None = None,
    ) -> bytes:
        """The frames as one animated GIF, rendered by the server (file bytes)."""
        payload = {**_interpolate_payload(start, end, steps, method, truncation), "format": "gif"}
        return self.predict_bytes("interpolate", payload, accept="image/gif")

    def interpolate_stream(
        self,
        start: Point,
        end: Point,
        steps: int = 16,
        method: Literal["slerp", "lerp"] = "slerp",
        truncation: float | None = None,
    ) -> Iterator[Frame]:
        """Frames as they are rendered: a plain iterator."""
        for message in self.stream("interpolate", _interpolate_payload(start, end, steps, method, truncation)):
            yield Frame.model_validate(message)


def retry_delay(backoff: float, failures: int, rng: random.Random) -> float:
    """Seconds before retry number `failures` + 1: half of `backoff * 2**failures` for sure, plus up to the
    other half at random. Clients cut off together (a restart, a rollout) then spread their retries over the
    second half of each window instead of arriving in lockstep, and none retries sooner than half the backoff.
    """
    window = backoff * 2**failures
    return window / 2 + rng.uniform(0, window / 2)


def new_request_id() -> str:
    """A fresh request id for one attempt: 32 hex digits, safe as X-Request-Id (digitlab.errors.SAFE_REQUEST_ID)."""
    return uuid.uuid4().hex


def decode_message(data: bytes | str, request_id: str | None = None) -> Any:
    """A JSON answer or message -> its value, raising a handler's error object as `ServerError`, whose
    `request_id` is the object's own, else `request_id` (the call's).

    Over gRPC, TorchServe 0.12 drops the status a handler sets, so a refusal arrives as an ordinary
    message holding the error object; a stream that fails after it began ends with one, over REST too.
    """
    value = json.loads(data)
    if is_handler_error(value):
        raise ServerError(value["code"], value["message"], value.get("request_id") or request_id)
    return value


def _sample_payload(
    n: int, seed: int | None, digit: int | None, format: str, truncation: float | None
) -> dict[str, Any]:
    optional = {k: v for k, v in (("seed", seed), ("digit", digit), ("truncation", truncation)) if v is not None}
    return {"n": n, **optional, "format": format}


def _interpolate_payload(start: Point, end: Point, steps: int, method: str, truncation: float | None) -> dict[str, Any]:
    """Fields left out when not given, so a default request is the one the server documents."""
    payload = {"start": start, "end": end, "steps": steps, "method": method}
    return payload if truncation is None else {**payload, "truncation": truncation}
