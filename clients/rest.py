"""REST client for TorchServe's inference API (or the door in front of it).

    with RestClient("http://127.0.0.1:8080") as client:
        client.palindrome([1, 2, 3, 2]).digit                  # 1
        for frame in client.interpolate_stream({"digit": 9}, {"digit": 3}, steps=24):
            print(frame.index, frame.digit)                     # NDJSON frames, as they are rendered
        client.predict("sample", {"n": 4, "seed": 7})          # untyped: the decoded JSON answer

Keys, retries and `"stream": true` (added for the models that take it) are `Client`'s, in base.py; this
module only makes one attempt over HTTP. A refusal (any status but 2xx) raises `ServerError`.

An `https://` URL is TLS, verified against `ca=` (else $DIGITLAB_CA, else the local door's CA for a server
on this machine, else requests' default roots: tls.py); a certificate that cannot be verified raises
`ServerError("tls", ...)` at once, never retried and never accepted anyway.

    with RestClient("https://127.0.0.1:8090", ca=".door/tls/ca.pem", key_file=".door/api_keys") as door:
        door.palindrome("1232").digit
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from digitlab.errors import REQUEST_ID_HEADER

from .base import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    Client,
    decode_message,
    new_request_id,
)
from .errors import ServerError, Unreachable
from .tls import find_ca, handshake_failed, host_of, rest_url, verify_failed

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "RestClient"]
PLAIN_TO_TLS = "plain HTTP request was sent to HTTPS port"  # nginx's 400 (its error 497)


class RestClient(Client):
    """POSTs JSON to `{url}/predictions/{model}` over one `requests.Session`; `ca`: the CA file (PEM) that
    signed an `https://` server's certificate (tls.py says where it is looked for when not given)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        key_file: str | Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        session: requests.Session | None = None,
        ca: str | Path | None = None,
    ) -> None:
        super().__init__(token, key_file, timeout, retries, backoff)
        self.url, self.tls = rest_url(url)
        if not self.tls and ca is not None:
            raise ValueError(f"a CA was given for {self.url}, which is plain HTTP: use https://")
        self.ca = find_ca(host_of(self.url), ca) if self.tls else None  # None: requests' default roots
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
        # A fresh id per attempt, which the door and the workers log the request by and the answer repeats.
        sent_id = new_request_id()
        headers = {"Content-Type": "application/json", "Accept": accept, REQUEST_ID_HEADER: sent_id}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            resp = self.session.post(
                f"{self.url}/predictions/{model}",
                data=json.dumps(payload),
                headers=headers,
                timeout=self.timeout,
                stream=stream,
                verify=str(self.ca) if self.ca else None,  # None: the session's (True unless a caller set it)
            )
        except requests.exceptions.SSLError as err:  # before ConnectionError, its base
            if _cause(err, ssl.SSLEOFError) is not None:  # a handshake cut off (a door reloading): worth a retry
                raise Unreachable("unreachable", f"{self.url}: the TLS handshake was cut off") from None
            raise tls_error(self.url, err, self.ca) from None  # a certificate refused: not worth a retry
        except requests.ConnectionError as err:  # refused, reset, no route (also a connect timeout)
            raise Unreachable("unreachable", unreachable(self.url, self.tls, err)) from None
        except requests.Timeout:
            raise ServerError("timeout", f"no answer from {self.url} within {self.timeout} s") from None
        self.last_request_id = resp.headers.get(REQUEST_ID_HEADER, sent_id)
        if not resp.ok:
            with resp:
                message, said_id = _message(resp)
            if resp.status_code == 400 and PLAIN_TO_TLS in message:  # nginx's answer on a TLS port
                message = f"{self.url} is a TLS port: use https://{self.url.partition('://')[2]}"
            raise ServerError(resp.status_code, message, said_id or self.last_request_id)
        return resp

    def _bytes(self, model: str, payload: dict[str, Any], key: str | None, accept: str) -> bytes:
        with self._post(model, payload, key, accept) as resp:
            return resp.content

    def _messages(self, model: str, payload: dict[str, Any], key: str | None) -> Iterator[dict[str, Any]]:
        resp = self._post(model, payload, key, stream=True)  # the status line came: a refusal raised here
        return _lines(resp, self.last_request_id)  # the id _post just read (or sent)


def _lines(resp: requests.Response, request_id: str | None = None) -> Iterator[Any]:
    """Each newline-delimited JSON message of a chunked answer, as its chunk arrives; a failure's error object
    is raised as `ServerError` naming `request_id` (the answer's) when the object names none."""
    with resp:
        for line in resp.iter_lines():
            if line:
                yield decode_message(line, request_id)


def _message(resp: requests.Response) -> tuple[str, str | None]:
    """(the server's JSON `message`, its `request_id`); else the title of an HTML error page, else the text."""
    try:
        body = resp.json()
        return body.get("message", resp.text), body.get("request_id")
    except (ValueError, AttributeError):
        title = re.search(r"<title>(.*?)</title>", resp.text, re.I | re.S)
        return (title[1] if title else resp.text).strip() or resp.reason, None


def unreachable(url: str, tls: bool, err: requests.ConnectionError) -> str:
    """Why no answer came: nothing listens (or no route to it), or the server dropped the connection (a
    plain request to a TLS port that does not answer one, or a server going down)."""
    if _cause(err, (ConnectionResetError, BrokenPipeError)) is None:  # RemoteDisconnected is a reset
        return f"no server at {url}: start it with `make serve`"
    hint = "" if tls else f" (if it serves TLS, use https://{url.partition('://')[2]})"
    return f"{url} closed the connection without an answer{hint}"


def tls_error(url: str, err: requests.exceptions.SSLError, ca: Path | None) -> ServerError:
    """A failed TLS handshake as one line: a certificate that could not be verified, or no TLS at all."""
    cause = _cause(err, ssl.SSLError)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return verify_failed(url, cause.verify_message or "certificate verify failed", ca)
    reason = getattr(cause, "reason", None) or (str(cause) if cause else str(err))
    return handshake_failed(url, reason)


def _cause(err: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of type `kind` among `err`'s causes and arguments (urllib3 wraps them deeply)."""
    seen, todo = set(), [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind) and current is not err:
            return current
        todo += [
            x
            for x in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args)
            if isinstance(x, BaseException)
        ]
    return None
