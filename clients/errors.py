"""The one error type clients raise: what the server (or the network) said, in a line."""

from __future__ import annotations


class ServerError(RuntimeError):
    """`status` is the HTTP status (or gRPC code name); `message` is the server's explanation."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
