"""One way to ask an HTTP endpoint something: `request` for an answer, `check` for "does it say 200?".

Every process of the runtime asks over plain HTTP on loopback or the serving network (readiness, TorchServe's
management and metrics APIs, a replica's /ready), with the standard library only, because ops.follow runs in
the door's image, which has no third-party package. The three outcomes a prober must tell apart are kept
apart: an answer (whatever its status), a refusal (nothing listens: down), and silence (no answer within
the timeout: maybe only slow).
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def request(
    method: str,
    url: str,
    token: str | None = None,
    body: bytes | None = None,
    timeout: float = TIMEOUT_S,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one request (`headers`: more to send, e.g. an X-Request-Id); an HTTP error status is an
    answer too. A connection that fails or times out raises OSError (urllib's URLError is one)."""
    headers = ({"Content-Type": "application/json"} if body is not None else {}) | (headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def check(url: str, timeout: float = TIMEOUT_S) -> bool | None:
    """True: GET `url` answered 200. False: any other answer, or nothing listens. None: no answer in `timeout`."""
    try:
        return request("GET", url, timeout=timeout)[0] == 200
    except TimeoutError:
        return None
    except urllib.error.URLError as err:
        return None if isinstance(err.reason, (TimeoutError, socket.timeout)) else False
    except OSError:
        return False


def answers_ok(url: str, timeout: float = TIMEOUT_S) -> bool:
    """`check`, with silence counted as not ready: for a caller that must answer yes or no now."""
    return check(url, timeout) is True
