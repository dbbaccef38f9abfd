"""REST client for TorchServe's inference API (or the door in front of it).

    with RestClient("http://127.0.0.1:8080") as client:
        client.palindrome([1, 2, 3, 2]).digit                  # 1
        for frame in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=24):
            print(frame.index, frame.digit)                     # NDJSON frames, as they are rendered
        client.predict("sample", {"n": 4, "seed": 7})          # untyped: the decoded JSON answer

Keys, retries and `"stream": true` (added for the models that take it) are `Client`'s, in base.py; this
module only makes one attempt over HTTP. A refusal (any status but 2xx) raises `ServerError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from .base import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DEFAULT_URL, Client, decode_message
from .errors import ServerError, Unreachable

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "RestClient"]


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
        """TorchServe refuses a key with 400 "Token Authorization failed"; the door with 401."""
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
