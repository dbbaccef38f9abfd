"""Start, wait for, and stop a TorchServe instance: used by `make serve` / `make stop` and by the tests.

    python -m tools.server start [--workdir .ts] [--config config.properties]
    python -m tools.server stop  [--workdir .ts]
    python -m tools.server run   [--workdir .ts] [--config config.properties]   # foreground (containers)

TorchServe writes key_file.json and logs/ into its working directory, so each instance gets its own
(`.ts/` for `make serve`, a temporary one for tests) and a user's server and the tests never meet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
PID_FILE = "torchserve.pid"


@dataclass(frozen=True)
class Endpoints:
    inference: str
    management: str
    metrics: str
    grpc_inference: str
    grpc_management: str


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def endpoints(props: dict[str, str]) -> Endpoints:
    return Endpoints(
        inference=props["inference_address"],
        management=props["management_address"],
        metrics=props["metrics_address"],
        grpc_inference=f"{props['grpc_inference_address']}:{props['grpc_inference_port']}",
        grpc_management=f"{props['grpc_management_address']}:{props['grpc_management_port']}",
    )


def with_ports(props: dict[str, str], ports: list[int]) -> dict[str, str]:
    """A copy of `props` whose five listeners use `ports` (inference, management, metrics, gRPC x2)."""
    out = dict(props)
    for key, port in zip(("inference_address", "management_address", "metrics_address"), ports):
        out[key] = re.sub(r":\d+$", f":{port}", props[key])
    out["grpc_inference_port"], out["grpc_management_port"] = str(ports[3]), str(ports[4])
    return out


def read_keys(workdir: Path) -> dict[str, str]:
    """{"management": key, "inference": key, "API": key} from TorchServe's key_file.json."""
    data = json.loads((workdir / "key_file.json").read_text())
    return {name: entry["key"] for name, entry in data.items()}


def archives(model_store: Path = MODEL_STORE) -> list[str]:
    return sorted(p.stem for p in model_store.glob("*.mar"))


def start(workdir: Path, config: Path, model_store: Path = MODEL_STORE, env: dict[str, str] | None = None,
          console_log: bool = True) -> int:
    """Launch TorchServe in its own process group, serving every archive in `model_store`; returns its PID.

    Its output goes to `workdir/console.log`, or with `console_log=False` to our own stdout (a container's log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    models = archives(model_store)
    if not models:
        raise SystemExit(f"no .mar archives in {model_store}: run `make archives` first")
    (workdir / "tmp").mkdir(exist_ok=True)
    # torchserve refuses to start while its own pid file (in TMPDIR) names a live process; after a
    # kill it can outlive the server and a recycled PID then blocks every restart.
    (workdir / "tmp" / ".model_server.pid").unlink(missing_ok=True)
    run_env = {
        **os.environ,
        # One intra-op thread per worker: on a small CPU, workers competing for every core ran 3x slower.
        "OMP_NUM_THREADS": "1",
        # Per-instance temp: TMPDIR for Python, TEMP becomes the frontend's java.io.tmpdir, which holds the
        # extracted models and the worker sockets (.ts.sock.9000+). Shared, two instances delete each other's.
        "TMPDIR": str(workdir / "tmp"),
        "TEMP": str(workdir / "tmp"),
        "LOG_LOCATION": str(workdir / "logs"),
        "METRICS_LOCATION": str(workdir / "logs"),
        **(env or {}),
    }
    cmd = [
        str(Path(sys.executable).parent / "torchserve"), "--start", "--foreground", "--ncs",
        "--ts-config", str(config.resolve()),
        "--model-store", str(model_store.resolve()),
        "--models", *[f"{m}={m}.mar" for m in models],
    ]
    # The child keeps its own copy of the descriptor; stdout=None inherits ours.
    with open(workdir / "console.log", "wb") if console_log else contextlib.nullcontext() as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=run_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (workdir / PID_FILE).write_text(str(proc.pid))
    return proc.pid


def _get_json(url: str, token: str, timeout: float = 5.0):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ready(workdir: Path, props: dict[str, str], models: list[str], pid: int, timeout: float = 180.0) -> float:
    """Block until every worker of every model is READY (not just /ping); returns seconds waited.

    /ping answers Healthy as soon as the frontend is up, before any worker has loaded its model, so
    readiness is read from the management API's worker list instead.
    """
    began = time.monotonic()
    management = endpoints(props).management
    while time.monotonic() - began < timeout:
        if not alive(pid):
            raise RuntimeError(f"TorchServe exited during start-up; see {workdir / 'console.log'}")
        try:
            token = read_keys(workdir)["management"]
            states = [w["status"] for m in models for w in _get_json(f"{management}/models/{m}", token)[0]["workers"]]
            if states and all(s == "READY" for s in states):
                return time.monotonic() - began
        except (FileNotFoundError, KeyError, IndexError, json.JSONDecodeError, urllib.error.URLError, OSError):
            pass  # key file not written yet, or frontend not listening yet
        time.sleep(0.25)
    raise TimeoutError(f"workers not READY after {timeout:.0f}s; see {workdir / 'logs'}")


def stop(workdir: Path, grace: float = 30.0) -> bool:
    """SIGTERM the server's process group (frontend and workers), SIGKILL after `grace` seconds."""
    pid_file = workdir / PID_FILE
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (tests)
            except ChildProcessError:
                pass
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)
    return True


def run(workdir: Path, config: Path) -> int:
    """Serve in the foreground until TorchServe exits (a container's main process); returns its exit code.

    SIGTERM or SIGINT (docker stop, a Kubernetes pod ending) stops its whole process group. Readiness is
    not awaited here: the readiness endpoint tells the orchestrator.
    """
    pid = start(workdir, config, console_log=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os.killpg(pid, signal.SIGTERM))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class RunningServer:
    workdir: Path
    endpoints: Endpoints
    models: list[str]
    pid: int
    ready_s: float

    def key(self, kind: str = "inference") -> str:
        return read_keys(self.workdir)[kind]

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    def worker_pids(self, model: str) -> list[int]:
        data = _get_json(f"{self.endpoints.management}/models/{model}", self.key("management"))
        return sorted(w["pid"] for w in data[0]["workers"])


@contextmanager
def serving(workdir: Path, model_store: Path = MODEL_STORE, base_config: Path = ROOT / "config.properties",
            timeout: float = 240.0, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """A private TorchServe on free ports (config copied from `base_config`), READY on entry, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    props = with_ports(read_properties(base_config), free_ports(5))
    config = workdir / "config.properties"
    write_properties(config, props)
    began = time.monotonic()
    pid = start(workdir, config, model_store, env)
    try:
        models = archives(model_store)
        wait_ready(workdir, props, models, pid, timeout)
        yield RunningServer(workdir, endpoints(props), models, pid, time.monotonic() - began)
    finally:
        stop(workdir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "run"])
    p.add_argument("--workdir", type=Path, default=ROOT / ".ts", help="TorchServe's working directory (keys, logs)")
    p.add_argument("--config", type=Path, default=ROOT / "config.properties")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every worker READY")
    args = p.parse_args(argv)
    if args.action == "stop":
        print("TorchServe stopped" if stop(args.workdir) else "TorchServe was not running (no pid file)")
        return
    if args.action == "run":  # a container's own server: a pid file left by its last run names no server
        raise SystemExit(run(args.workdir, args.config))
    if (args.workdir / PID_FILE).exists() and alive(int((args.workdir / PID_FILE).read_text())):
        raise SystemExit("TorchServe is already running: `make stop` first")
    props = read_properties(args.config)
    began = time.monotonic()
    pid = start(args.workdir, args.config)
    try:
        wait_ready(args.workdir, props, archives(), pid, args.timeout)
    except (RuntimeError, TimeoutError) as err:
        stop(args.workdir)
        raise SystemExit(f"TorchServe did not become ready: {err}")
    ep = endpoints(props)
    print(f"TorchServe ready in {time.monotonic() - began:.1f}s (pid {pid}), models: {', '.join(archives())}")
    print(f"  REST inference   {ep.inference}/predictions/<model>")
    print(f"  REST management  {ep.management}/models")
    print(f"  metrics          {ep.metrics}/metrics")
    print(f"  gRPC             {ep.grpc_inference} (inference), {ep.grpc_management} (management)")
    print(f"  token            Authorization: Bearer $(python -m clients token)   [keys in {args.workdir / 'key_file.json'}]")
    print("  stop with        make stop")


if __name__ == "__main__":
    main()
