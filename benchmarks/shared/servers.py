"""Servers several studies start: the no-op handler's archive (the engine's ceiling), a door with its
per-client limits off, and the wait for a server started as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.shared.ab import Target
from digitlab import catalog
from ops import door as ops_door
from ops import server as ops_server
from tools.build_archives import ROOT

# Copied into the archive by torch-model-archiver (--handler): it runs in a TorchServe worker.
NOOP_HANDLER = Path(__file__).resolve().with_name("noop_handler.py")
REFERENCE = "noop"  # the no-op handler's model name: the reference of every ratio


def noop_archive(store: Path, name: str = REFERENCE, like: str = "palindrome") -> None:
    """The no-op handler as model `name`, with the model config (batching, workers) of the archive `like`."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            *("--model-name", name, "--version", "1.0", "--handler", str(NOOP_HANDLER)),
            *("--config-file", str(ROOT / catalog.model(like).config), "--export-path", str(store), "--force"),
        ],
        check=True,
    )


@contextmanager
def unlimited_door(server: ops_server.RunningServer, runtime: Path) -> Iterator[Target]:
    """A door in front of `server` for every model it serves, per-client limits off (the load is one client):
    yields the door's `/predictions/` prefix (a Target: append the model) with the door's client key."""
    key = "benchmark-client-key-0000001"
    key_file = runtime.parent / f"{runtime.name}_api_keys"
    key_file.write_text(key + "\n")
    port, grpc_port = ops_server.free_ports(2)
    door = ops_door.Door(
        host="127.0.0.1",
        port=port,
        grpc_port=grpc_port,
        replicas=[ops_door.replica(server.endpoints)],
        models=server.models,
        torchserve_key_file=str(server.key_file),
        client_key_file=str(key_file),
        max_body_bytes=int(ops_server.read_properties(server.workdir / "config.properties")["max_request_size"]),
        limits=ops_door.Limits(per_client=False),
    )
    ops_door.start(runtime, door)
    try:
        yield Target(f"http://127.0.0.1:{port}/predictions/", {"Authorization": f"Bearer {key}"})
    finally:
        ops_door.stop(runtime)


def wait_answering(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until a GET of `url` answers; `proc`, the server, must not exit meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server of {url} exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)  # not listening yet: uvicorn binds after the models are loaded
    raise TimeoutError(f"no answer from {url} after {timeout:.0f}s")
