"""REST client for TorchServe's inference API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from clients.auth import find_token
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


def predict(
    model: str,
    payload: dict[str, Any],
    url: str = DEFAULT_URL,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST `payload` as JSON to /predictions/`model`; returns the decoded JSON answer."""
    token = token if token is not None else find_token()
    post = (session or requests).post
    try:
        resp = post(f"{url}/predictions/{model}", data=json.dumps(payload), headers=_headers(token), timeout=timeout)
    except requests.ConnectionError:
        raise ServerError("unreachable", f"no server at {url}: start it with `make serve`") from None
    _raise_for_status(resp)
    return resp.json()


def predict_bytes(
    model: str, payload: dict[str, Any], url: str = DEFAULT_URL, token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT, accept: str = "*/*",
) -> bytes:
    """Like `predict`, for answers that are files (PNG grid, GIF) -> the body's bytes."""
    token = token if token is not None else find_token()
    headers = {**_headers(token), "Accept": accept}
    try:
        resp = requests.post(f"{url}/predictions/{model}", data=json.dumps(payload), headers=headers, timeout=timeout)
    except requests.ConnectionError:
        raise ServerError("unreachable", f"no server at {url}: start it with `make serve`") from None
    _raise_for_status(resp)
    return resp.content


def stream(
    model: str, payload: dict[str, Any], url: str = DEFAULT_URL, token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[dict[str, Any]]:
    """POST with `"stream": true` and yield each newline-delimited JSON message as its chunk arrives."""
    token = token if token is not None else find_token()
    try:
        resp = requests.post(f"{url}/predictions/{model}", data=json.dumps({**payload, "stream": True}),
                             headers=_headers(token), timeout=timeout, stream=True)
    except requests.ConnectionError:
        raise ServerError("unreachable", f"no server at {url}: start it with `make serve`") from None
    with resp:
        _raise_for_status(resp)
        for line in resp.iter_lines():
            if line:
                yield json.loads(line)
