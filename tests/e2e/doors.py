"""A door the e2e tests start in front of the session's TorchServe: where it answers and what it wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ops import door as ops_door
from ops import door_tls
from ops import server as ops_server

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

    def log_lines(self) -> list[dict]:
        """The access log's lines, each a JSON object (ops/nginx.conf.template, `log_format door`)."""
        return [json.loads(line) for line in (self.runtime / "logs" / "access.log").read_text().splitlines()]

    def error_log(self) -> str:
        """nginx's error log, where each refusal by a limit names the limit ("limiting requests/connections")."""
        return (self.runtime / "logs" / "error.log").read_text()

    def log_bytes(self) -> int:
        """Everything the door has written under logs/, rolled files included."""
        return sum(p.stat().st_size for p in (self.runtime / "logs").iterdir() if p.is_file())

    def error_log_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.runtime / "logs").glob("error.log*"))


def open_door(
    server: ops_server.RunningServer,
    runtime: Path,
    limits: ops_door.Limits = ops_door.LIMITS,
    replicas: list[ops_door.Replica] | None = None,
    metrics: str | None = None,
    tls: bool = False,
) -> RunningDoor:
    """A door on free ports in front of the session's TorchServe (`replicas`: others), started from `runtime`;
    `tls`: over TLS with the local CA's certificate, as `make door TLS=1` makes it in RUNTIME/tls."""
    files = door_tls.local_certificates(runtime / ops_door.TLS_DIR, door_tls.server_names())[0] if tls else None
    port, grpc_port = ops_server.free_ports(2)
    door = ops_door.Door(
        host=HOST,
        port=port,
        grpc_port=grpc_port,
        replicas=replicas or [ops_door.replica(server.endpoints)],
        models=server.models,
        torchserve_key_file=str(server.key_file),
        client_key_file=str(runtime / ops_door.CLIENT_KEY_FILE),
        max_body_bytes=int(ops_server.read_properties(server.workdir / "config.properties")["max_request_size"]),
        limits=limits,
        metrics=metrics,
        tls_cert=files.cert if files else None,
        tls_key=files.key if files else None,
        tls_ca=files.ca if files else None,
        tls_live=files.live if files else False,
    )
    ops_door.start(runtime, door)
    return RunningDoor(runtime, door)


def end_load(stop, threads: list, clients: list, running: RunningDoor, timeout: float) -> None:
    """The end of a test's load through a door: its threads told to stop and joined, its clients closed, the
    door stopped."""
    stop.set()
    for thread in threads:
        thread.join(timeout=timeout)
    for client in clients:
        client.close()
    ops_door.stop(running.runtime)
