"""REST client for TorchServe's inference API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from clients.auth import call_with_fresh_key
from clients.errors import ServerError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0  # seconds; every call has one


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _raise_for_status(resp: requests.Response) -> None:
    if resp.ok:
        return
    try:
        message = resp.json().get("message", resp.text)
    except (ValueError, AttributeError):
        message = resp.text.strip() or resp.reason
    raise ServerError(resp.status_code, message)


def _is_auth_error(err: Exception) -> bool:
    """TorchServe refuses a key with 400 "Token Authorization failed"; the front door with 401."""
    return isinstance(err, ServerError) and (err.status == 401 or "Token Authorization failed" in err.message)


def _post(model: str, payload: dict[str, Any], url: str, token: str | None, timeout: float,
          session: requests.Session | None = None, accept: str = "*/*", stream: bool = False) -> requests.Response:
    """POST `payload` as JSON; a refused key is re-read from the key file and tried once more."""
    def call(key: str | None) -> requests.Response:
        try:
            resp = (session or requests).post(f"{url}/predictions/{model}", data=json.dumps(payload),
                                              headers={**_headers(key), "Accept": accept}, timeout=timeout,
                                              stream=stream)
        except requests.ConnectionError:
            raise ServerError("unreachable", f"no server at {url}: start it with `make serve`") from None
        if not resp.ok:
            with resp:
                _raise_for_status(resp)
        return resp

    return call_with_fresh_key(call, token, _is_auth_error)


def predict(
    model: str,
    payload: dict[str, Any],
    url: str = DEFAULT_URL,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST `payload` as JSON to /predictions/`model`; returns the decoded JSON answer."""
    return _post(model, payload, url, token, timeout, session).json()


def predict_bytes(
    model: str, payload: dict[str, Any], url: str = DEFAULT_URL, token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT, accept: str = "*/*",
) -> bytes:
    """Like `predict`, for answers that are files (PNG grid, GIF) -> the body's bytes."""
    return _post(model, payload, url, token, timeout, accept=accept).content


def stream(
    model: str, payload: dict[str, Any], url: str = DEFAULT_URL, token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[dict[str, Any]]:
    """POST with `"stream": true` and yield each newline-delimited JSON message as its chunk arrives."""
    with _post(model, {**payload, "stream": True}, url, token, timeout, stream=True) as resp:
        for line in resp.iter_lines():
            if line:
                yield json.loads(line)
