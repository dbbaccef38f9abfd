"""Shared fixtures. The `server` fixture starts ONE real TorchServe for the whole session.

It runs on free ports, in its own working directory (keys, logs, TMPDIR), from a copy of the
project's config.properties, so it never meets a server the user started with `make serve`; it waits
for every worker READY and always stops what it started.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import server as ts

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunningServer:
    workdir: Path
    endpoints: ts.Endpoints
    models: list[str]
    pid: int

    def key(self, kind: str = "inference") -> str:
        return ts.read_keys(self.workdir)[kind]

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    def worker_pids(self, model: str) -> list[int]:
        data = ts._get_json(f"{self.endpoints.management}/models/{model}", self.key("management"))
        return sorted(w["pid"] for w in data[0]["workers"])


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> RunningServer:
    models = ts.archives()
    if not models:
        pytest.fail("no archives in model_store/: run the suite with `make test`, which builds them")
    workdir = tmp_path_factory.mktemp("torchserve")
    props = ts.with_ports(ts.read_properties(ROOT / "config.properties"), free_ports(5))
    config = workdir / "config.properties"
    ts.write_properties(config, props)
    pid = ts.start(workdir, config)
    try:
        ts.wait_ready(workdir, props, models, pid, timeout=240)
        yield RunningServer(workdir, ts.endpoints(props), models, pid)
    finally:
        ts.stop(workdir)
