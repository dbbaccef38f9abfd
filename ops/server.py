"""Start, wait for, and stop a TorchServe instance: used by `make serve` / `make stop` and by the tests.

    python -m ops.server start [--workdir .ts] [--config config.properties]
    python -m ops.server stop  [--workdir .ts]
    python -m ops.server rotate-keys [--workdir .ts]

`start` runs `ops.supervisor` in the background, which starts TorchServe, serves the readiness endpoint
and watches the workers, then waits until that endpoint says ready. TorchServe writes key_file.json and
logs/ into its working directory, so each instance gets its own (`.ts/` for `make serve`, a temporary one
for tests) and a user's server and the tests never meet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from ops import probe
from ops.instance import (
    ADDRESS_KEYS,
    DEFAULT_CONFIG,
    DEFAULT_WORKDIR,
    GRPC_PORT_KEYS,
    INSTANCE_CONFIG,
    MODEL_STORE,
    READY_PATH,
    ROOT,
    SUPERVISOR_PID_FILE,
    TORCHSERVE_PID_FILE,
    Endpoints,
    alive,
    archives,
    endpoints,
    group_alive,
    key_file,
    read_keys,
    read_properties,
    with_ports,
    write_properties,
)
from ops.launcher import STOP_GRACE_S as TORCHSERVE_STOP_GRACE_S
from ops.renewal import renew_keys
from ops.watch import DRAIN_TIMEOUT_S, Settings

CONSOLE_LOG = "console.log"  # the supervisor's JSON lines and TorchServe's console, rolled by size
CRASH_LOG = "supervisor.err"  # what Python prints outside the log (a crash at start-up)
STOP_GRACE_S = DRAIN_TIMEOUT_S + TORCHSERVE_STOP_GRACE_S + 5  # the supervisor's drain and TorchServe's own stop

SUPERVISOR_MODULE = "ops.supervisor"


def start(workdir: Path, config: Path, model_store: Path = MODEL_STORE, env: dict[str, str] | None = None) -> int:
    """Launch the supervisor (and so TorchServe) in a session of its own, serving every archive in
    `model_store`; returns the supervisor's PID. Its log and TorchServe's console go to console.log (JSON lines,
    rolled at 10 MB)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not archives(model_store):
        raise SystemExit(f"no .mar archives in {model_store}: run `make archives` first")
    cmd = [
        sys.executable,
        "-m",
        SUPERVISOR_MODULE,
        "--workdir",
        str(workdir.resolve()),
        "--config",
        str(config.resolve()),
        "--model-store",
        str(model_store.resolve()),
    ]
    # Its log lines go to console.log, which it rolls by size; what Python itself prints outside them (a crash
    # before logging is set up) goes to supervisor.err.
    cmd += ["--log-file", str((workdir / CONSOLE_LOG).resolve())]
    with open(workdir / CRASH_LOG, "ab") as crash:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=crash,
            start_new_session=True,
        )
    (workdir / SUPERVISOR_PID_FILE).write_text(str(proc.pid))
    return proc.pid


def _get_json(url: str, token: str, timeout: float = probe.TIMEOUT_S):
    status, body = probe.request("GET", url, token, timeout=timeout)
    if status != 200:
        raise OSError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def wait_ready(workdir: Path, props: dict[str, str], pid: int, timeout: float = 180.0) -> float:
    """Block until the supervisor's readiness endpoint says ready; returns seconds waited.

    Ready means every worker of every model is READY and each model has answered a request; TorchServe's
    own /ping says Healthy long before that.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not alive(pid):
            raise RuntimeError(
                f"the supervisor exited during start-up; see {workdir / CONSOLE_LOG} and {workdir / CRASH_LOG}"
            )
        if probe.answers_ok(f"{props['ready_address']}{READY_PATH}"):  # else not listening yet, or 503
            return time.monotonic() - began
        time.sleep(0.25)
    raise TimeoutError(f"not ready after {timeout:.0f}s; see {workdir / 'logs'} and {workdir / CONSOLE_LOG}")


def owned(pid: int, workdir: Path) -> bool:
    """Is `pid` this workdir's supervisor? A PID file can outlive its process and the PID be reused."""
    try:
        args = " ".join(psutil.Process(pid).cmdline())  # the whole command line, however long
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return SUPERVISOR_MODULE in args and str(workdir.resolve()) in args


def stop(workdir: Path, grace: float = STOP_GRACE_S) -> bool:
    """SIGTERM the supervisor (which drains, then stops TorchServe and its workers); SIGKILL both groups after
    `grace` s.

    Signals nothing unless the PID in the file is this workdir's own supervisor.
    """
    pid_file = workdir / SUPERVISOR_PID_FILE
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    if not owned(pid, workdir):
        print(f"{pid_file} named process {pid}, which is not this workdir's supervisor: not signalled", file=sys.stderr)
        return False
    ts_file = workdir / TORCHSERVE_PID_FILE
    ts_group = int(ts_file.read_text()) if ts_file.exists() else None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while (group_alive(pid) or (ts_group and group_alive(ts_group))) and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (tests)
        except ChildProcessError:
            pass
    for group in (pid, ts_group):
        if group and group_alive(group):
            os.killpg(group, signal.SIGKILL)
    return True


def rotate_keys(workdir: Path) -> list[str]:
    """Replace TorchServe's inference and management keys now (clients re-read the key file)."""
    settings = Settings.from_properties(workdir, read_properties(workdir / INSTANCE_CONFIG))
    return renew_keys(settings.api, settings.key_lifetime_s, force=True)


def free_ports(n: int = len(ADDRESS_KEYS) + len(GRPC_PORT_KEYS)) -> list[int]:
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
    ready_at: float = 0.0  # wall clock (Unix seconds) when /ready first said ready

    def key(self, kind: str = "inference") -> str:
        return read_keys(self.workdir)[kind]

    @property
    def key_file(self) -> Path:
        return key_file(self.workdir)

    def worker_pids(self, model: str) -> list[int]:
        data = _get_json(f"{self.endpoints.management}/models/{model}", self.key("management"))
        return sorted(w["pid"] for w in data[0]["workers"])


@contextmanager
def serving(
    workdir: Path,
    model_store: Path = MODEL_STORE,
    base_config: Path = DEFAULT_CONFIG,
    timeout: float = 240.0,
    env: dict[str, str] | None = None,
    overrides: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """A private TorchServe on free ports (config copied from `base_config`), ready on entry, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    props = {**with_ports(read_properties(base_config), free_ports()), **(overrides or {})}
    config = workdir / "base.properties"
    write_properties(config, props)
    began = time.monotonic()
    pid = start(workdir, config, model_store, env)
    try:
        wait_ready(workdir, props, pid, timeout)
        ready_s = time.monotonic() - began
        yield RunningServer(workdir, endpoints(props), archives(model_store), pid, ready_s, time.time())
    finally:
        stop(workdir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "rotate-keys"])
    p.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="TorchServe's working directory: keys, logs, temp (default: .ts)",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: config.properties")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait until ready (default: 180)")
    args = p.parse_args(argv)
    if args.action == "stop":
        print("TorchServe stopped" if stop(args.workdir) else "TorchServe was not running")
        return
    if args.action == "rotate-keys":
        renewed = rotate_keys(args.workdir)
        print(
            f"new {' and '.join(renewed)} key(s) in {key_file(args.workdir)}"
            if renewed
            else "no keys to rotate: is the server running with token authorization on?"
        )
        return
    pid_file = args.workdir / SUPERVISOR_PID_FILE
    if pid_file.exists() and owned(int(pid_file.read_text()), args.workdir):
        raise SystemExit("TorchServe is already running: `make stop` first")
    props = read_properties(args.config)
    began = time.monotonic()
    pid = start(args.workdir, args.config)
    try:
        wait_ready(args.workdir, props, pid, args.timeout)
    except (RuntimeError, TimeoutError) as err:
        stop(args.workdir)
        raise SystemExit(f"TorchServe did not become ready: {err}") from err
    ep = endpoints(props)
    print(
        f"TorchServe ready in {time.monotonic() - began:.1f}s (supervisor pid {pid}), models: {', '.join(archives())}"
    )
    print(f"  REST inference   {ep.inference}/predictions/<model>")
    print(f"  gRPC inference   {ep.grpc_inference} (StreamPredictions)")
    print(f"  readiness        {ep.ready}/ready   (no key)")
    print(f"  REST management  {ep.management}/models")
    print(f"  metrics          {ep.metrics}/metrics")
    print(f"  token            Authorization: Bearer $(python -m clients token)   [keys in {key_file(args.workdir)}]")
    print("  rotate keys      make rotate-keys        stop with  make stop")


if __name__ == "__main__":
    main()
