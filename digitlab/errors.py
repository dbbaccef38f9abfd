"""The one error type of the product and the one body every error is sent as.

Every refusal and failure, whoever answers it, is the JSON object `{"code", "type", "message"}`: the handlers'
`InvalidRequest` (4xx) and `InternalError` (500), built here; the door's own refusals, whose text the door's
renderer fills from `error_body`; and TorchServe's, which have the same shape. The SDK recognises a handler's
error inside a gRPC reply or a stream by `is_handler_error`. Standard library only: the SDK, the runtime and the
workers all import it.
"""

from __future__ import annotations

import json
import re
from typing import Any

FIELDS = ("code", "type", "message")  # the error body, in this order, and `request_id` where one is known
REQUEST_ID = "request_id"
# A client's X-Request-Id (gRPC metadata x-request-id) is kept when it is this: 1 to 128 characters that need no
# escaping in a header, a log line or JSON. Anything else is replaced by one the server makes.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
REQUEST_ID_HEADER = "X-Request-Id"


def safe_request_id(value: object) -> str | None:
    """The client's request id if it is safe to carry (see SAFE_REQUEST_ID), else None."""
    return value if isinstance(value, str) and SAFE_REQUEST_ID.fullmatch(value) else None


def error_body(status: int, kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The body of an error: `{"code": status, "type": kind, "message": message[, "request_id": id]}`."""
    body = dict(zip(FIELDS, (status, kind, message)))
    return body | {REQUEST_ID: request_id} if request_id else body


def error_json(status: int, kind: str, message: str, request_id: str | None = None) -> str:
    """`error_body` as compact JSON text, as the door sends it (one line)."""
    return json.dumps(error_body(status, kind, message, request_id), separators=(", ", ": "))


class ServiceError(Exception):
    """An answer that is an error: `status` is the HTTP code, `kind` the body's `type`, `message` what to do."""

    kind = "ServiceError"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self, request_id: str | None = None) -> dict[str, Any]:
        return error_body(self.status, self.kind, self.message, request_id)


class InvalidRequest(ServiceError, ValueError):
    """A request the server refuses: `status` is the HTTP code (4xx), `message` says what to fix."""

    kind = "InvalidRequest"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class InternalError(ServiceError):
    """An unexpected failure while answering one request: its 500, the details stay in the log."""

    kind = "InternalError"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"the server failed to answer this request (id {request_id}); it is logged. "
            "Retrying the same request will fail the same way.",
            500,
        )
        self.request_id = request_id


HANDLER_ERRORS = frozenset({InvalidRequest.kind, InternalError.kind})  # the `type`s a handler's error body has


def is_handler_error(value: Any) -> bool:
    """True for a handler's error body, as it arrives inside a gRPC reply or as a stream's last message."""
    return (
        isinstance(value, dict)
        and value.get("type") in HANDLER_ERRORS
        and tuple(value) in (FIELDS, (*FIELDS, REQUEST_ID))
    )
