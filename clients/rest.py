"""REST client for TorchServe's inference API (or the front door in front of it).

    with RestClient("http://127.0.0.1:8080") as client:
        client.palindrome([1, 2, 3, 2]).digit                  # 1
        for frame in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=24):
            print(frame.index, frame.digit)                     # NDJSON frames, as they are rendered

The module-level `predict`, `predict_bytes` and `stream` make one call on a client of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from .base import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT, STREAMING_MODELS, Client, decode_message
from .errors import ServerError, Unreachable

DEFAULT_URL = "http://127.0.0.1:8080"


class RestClient(Client):
    """POSTs JSON to `{url}/predictions/{model}` over one `requests.Session`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        key_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(token, key_file, timeout, retries, backoff)
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self._own_session = session is None

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    @staticmethod
    def is_auth_error(err: Exception) -> bool:
        """TorchServe refuses a key with 400 "Token Authorization failed"; the front door with 401."""
        return isinstance(err, ServerError) and (err.status == 401 or "Token Authorization failed" in err.message)

    def _post(
        self, model: str, payload: dict[str, Any], key: str | None, accept: str = "*/*", stream: bool = False
    ) -> requests.Response:
        """One POST; a refusal (any status but 2xx) raises `ServerError` with the server's message."""
        headers = {"Content-Type": "application/json", "Accept": accept}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            resp = self.session.post(
                f"{self.url}/predictions/{model}",
                data=json.dumps(payload),
                headers=headers,
                timeout=self.timeout,
                stream=stream,
            )
        except requests.ConnectionError:  # refused, reset, no route (also a connect timeout)
            raise Unreachable("unreachable", f"no server at {self.url}: start it with `make serve`") from None
        except requests.Timeout:
            raise ServerError("timeout", f"no answer from {self.url} within {self.timeout} s") from None
        if not resp.ok:
            with resp:
                raise ServerError(resp.status_code, _message(resp))
        return resp

    def _bytes(self, model: str, payload: dict[str, Any], key: str | None, accept: str) -> bytes:
        with self._post(model, payload, key, accept) as resp:
            return resp.content

    def _messages(self, model: str, payload: dict[str, Any], key: str | None) -> Iterator[dict[str, Any]]:
        resp = self._post(model, payload, key, stream=True)  # the status line came: a refusal raised here
        return _lines(resp)


def _lines(resp: requests.Response) -> Iterator[Any]:
    """Each newline-delimited JSON message of a chunked answer, as its chunk arrives."""
    with resp:
        for line in resp.iter_lines():
            if line:
                yield decode_message(line)


def _message(resp: requests.Response) -> str:
    try:
        return resp.json().get("message", resp.text)
    except (ValueError, AttributeError):
        return resp.text.strip() or resp.reason


# -- one call each, on a client of its own ------------------------------------------------------------


def predict(
    model: str,
    payload: dict[str, Any],
    url: str = DEFAULT_URL,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST `payload` as JSON to /predictions/`model`; returns the decoded JSON answer."""
    with RestClient(url, token, timeout=timeout, session=session) as client:
        return client.predict(model, payload)


def predict_bytes(
    model: str,
    payload: dict[str, Any],
    url: str = DEFAULT_URL,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    accept: str = "*/*",
) -> bytes:
    """Like `predict`, for answers that are files (PNG grid, GIF) -> the body's bytes."""
    with RestClient(url, token, timeout=timeout) as client:
        return client.predict_bytes(model, payload, accept)


def stream(
    model: str,
    payload: dict[str, Any],
    url: str = DEFAULT_URL,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[dict[str, Any]]:
    """POST with `"stream": true` and yield each newline-delimited JSON message as its chunk arrives."""
    body = payload if model in STREAMING_MODELS else {**payload, "stream": True}  # the client adds it for these
    with RestClient(url, token, timeout=timeout) as client:
        yield from client.stream(model, body)
