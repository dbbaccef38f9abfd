"""The one error type clients raise: what the server (or the network) said, in a line."""

from __future__ import annotations


class ServerError(RuntimeError):
    """`status` is the HTTP status (or gRPC code name, or "unreachable"); `message` is the server's explanation;
    `request_id` the id the server's logs know the request by, where it said one."""

    def __init__(self, status: int | str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status = status
        self.message = message
        self.request_id = request_id


class Unreachable(ServerError):
    """No answer at all (connection refused or reset, no route): worth retrying, unlike a refusal."""
