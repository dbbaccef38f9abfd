"""The one error type clients raise: what the server (or the network) said, in a line."""

from __future__ import annotations


class ServerError(RuntimeError):
    """`status` is the HTTP status (or gRPC code name, or "unreachable"); `message` is the server's explanation."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Unreachable(ServerError):
    """No answer at all (connection refused or reset, no route): worth retrying, unlike a refusal."""
