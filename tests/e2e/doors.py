"""A door the e2e tests start in front of the session's TorchServe: where it answers and what it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ops import door as ops_door

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunningDoor:
    runtime: Path
    door: ops_door.Door

    @property
    def tls(self) -> bool:
        return bool(self.door.tls_cert)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.door.port}"

    @property
    def target(self) -> str:
        return f"{'grpcs://' if self.tls else ''}{HOST}:{self.door.grpc_port}"

    @property
    def ca(self) -> Path:
        return Path(self.door.tls_ca)

    @property
    def key_file(self) -> Path:
        return Path(self.door.client_key_file)

    @property
    def key(self) -> str:
        """The newest client key (rotation changes it)."""
        return ops_door.client_key(self.key_file)

    def log_lines(self) -> list[str]:
        return (self.runtime / "logs" / "access.log").read_text().splitlines()

    def error_log(self) -> str:
        """nginx's error log, where each refusal by a limit names the limit ("limiting requests/connections")."""
        return (self.runtime / "logs" / "error.log").read_text()

    def log_bytes(self) -> int:
        """Everything the door has written under logs/, rolled files included."""
        return sum(p.stat().st_size for p in (self.runtime / "logs").iterdir() if p.is_file())

    def error_log_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.runtime / "logs").glob("error.log*"))
