"""The ground of the runtime: the facts of one TorchServe instance, and nothing that acts on them.

An instance is a working directory (`.ts/` for `make serve`, a temporary one for tests, the server's home
in a container) plus a config.properties. This module owns what the runtime's processes share about it,
so that none of them imports another to learn it:
- the config: read, write, the hardening added at start-up (`instance_properties`), ports (`with_ports`);
- the endpoints it serves (`Endpoints`) and the readiness path;
- the files in its working directory: TorchServe's key file, the supervisor's and TorchServe's pid files,
  the instance config the supervisor wrote, and the registered doors (`register_door`, `registered_doors`);
- whether a process or process group is alive.

The supervisor, the server commands, the readiness probe and the door import this module; it imports none
of them. Processes signal each other by command or file: a door registers the command that reloads it,
and the supervisor runs that command after renewing TorchServe's keys.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from digitlab.keyfiles import TORCHSERVE_KEY_FILE, torchserve_keys
from ops import properties

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
DEFAULT_CONFIG = ROOT / "config.properties"
DEFAULT_WORKDIR = ROOT / ".ts"  # make serve's instance
DEFAULT_READY_ADDRESS = "http://127.0.0.1:8083"
# The supervisor's readiness check: 200 when every worker is READY and answering. Not TorchServe's /ping,
# which says Healthy before workers load and while one is stalled.
READY_PATH = "/ready"
LIVE_PATH = "/live"
EVENTS_PATH = "/events"
# Files in an instance's working directory.
INSTANCE_CONFIG = "config.properties"  # the config TorchServe runs with: the base plus instance_properties
SUPERVISOR_PID_FILE = "supervisor.pid"
TORCHSERVE_PID_FILE = "torchserve.pid"
# The doors that send this instance's key upstream: one JSON object a line, {"command": [...], "cwd": dir},
# the command that reloads that door (re-reading the key). A door holds TorchServe's key in its config, so
# each is reloaded after a renewal.
DOORS_FILE = "doors"
LOG_CAP_BYTES = 10 * 1024 * 1024  # a door's log is rolled past this, as TorchServe rolls its own (log4j2.xml)
# The listeners an instance needs, in the order `with_ports` assigns free ports to them.
ADDRESS_KEYS = ("inference_address", "management_address", "metrics_address", "ready_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")


def read_properties(path: Path) -> dict[str, str]:
    """A config.properties as TorchServe reads it (ops/properties.py)."""
    return properties.loads(path.read_text(encoding="utf-8"))


def write_properties(path: Path, props: dict[str, str]) -> None:
    """`props` as a config.properties that TorchServe, and `read_properties`, read back as `props`: a regex's
    backslashes (allowed_urls) are doubled for Java, and undone on reading."""
    path.write_text(properties.dumps(props), encoding="utf-8")


BACKEND_THREADS = 32  # idle netty threads cost a little memory each; see instance_properties


def instance_properties(base: dict[str, str], workdir: Path, model_store: Path) -> dict[str, str]:
    """`base` plus the settings that close TorchServe's code-loading paths, whatever `base` says.

    - allowed_urls: only archives by name in this model store. TorchServe's default allows any file://
      or http(s):// URL, and the management API (models and workflows) fetches and runs what it names.
    - workflow_store: an empty directory of this instance; with the above, no workflow can be registered.
    - enable_model_api=false: no model registration over the API.
    - netty_client_threads (at least BACKEND_THREADS): TorchServe's backend channels share these netty
      threads, one per channel, round robin. A unary gRPC call that streamed blocks one of them for
      minutes (ops/watch.py, `judge_unready`); with TorchServe's default (one per CPU, 2 here)
      that took half the models down with it. With many, it is one model's channel, and a restart moves on.
    """
    workflows = workdir / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "ready_address": base.get("ready_address", DEFAULT_READY_ADDRESS),
        "model_store": str(model_store),
        "allowed_urls": f"file://{re.escape(str(model_store))}/[A-Za-z0-9_]+[.]mar",
        "workflow_store": str(workflows),
        "enable_model_api": "false",
        "netty_client_threads": str(max(BACKEND_THREADS, int(base.get("netty_client_threads", 0)))),
    }


def with_ports(props: dict[str, str], ports: list[int]) -> dict[str, str]:
    """A copy of `props` whose listeners use `ports` (ADDRESS_KEYS, then GRPC_PORT_KEYS)."""
    out = {**props, "ready_address": props.get("ready_address", DEFAULT_READY_ADDRESS)}
    for key, port in zip(ADDRESS_KEYS + GRPC_PORT_KEYS, ports, strict=True):
        out[key] = str(port) if key in GRPC_PORT_KEYS else re.sub(r":\d+$", f":{port}", out[key])
    return out


@dataclass(frozen=True)
class Endpoints:
    inference: str
    management: str
    metrics: str
    grpc_inference: str
    grpc_management: str
    ready: str


def endpoints(props: dict[str, str]) -> Endpoints:
    return Endpoints(
        inference=props["inference_address"],
        management=props["management_address"],
        metrics=props["metrics_address"],
        grpc_inference=f"{props['grpc_inference_address']}:{props['grpc_inference_port']}",
        grpc_management=f"{props['grpc_management_address']}:{props['grpc_management_port']}",
        ready=props.get("ready_address", DEFAULT_READY_ADDRESS),
    )


def archives(model_store: Path = MODEL_STORE) -> list[str]:
    """The model names an instance serves: one per .mar archive in its model store."""
    return sorted(p.stem for p in model_store.glob("*.mar"))


def key_file(workdir: Path) -> Path:
    return workdir / TORCHSERVE_KEY_FILE


def read_keys(workdir: Path) -> dict[str, str]:
    """{"management": key, "inference": key, "API": key} of the instance; empty when token auth is off."""
    return torchserve_keys(key_file(workdir))


def register_door(workdir: Path, command: list[str], cwd: Path, logs: Path, pid_file: Path) -> None:
    """Remember a door that sends this instance's key upstream: the command (run in `cwd`) that reloads it,
    and its log folder and pid file, whose logs the supervisor caps (`cap_logs`)."""
    entry = {"command": command, "cwd": str(cwd), "logs": str(logs), "pid_file": str(pid_file)}
    with open(workdir / DOORS_FILE, "a") as doors:
        doors.write(json.dumps(entry) + "\n")


def registered_doors(workdir: Path) -> list[dict]:
    """The registered doors, {"command", "cwd"} each, once, oldest first."""
    path = workdir / DOORS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in dict.fromkeys(line for line in lines if line.strip())]


def forget_doors(workdir: Path, keep: list[dict]) -> None:
    """Rewrite the register with only `keep` (the doors that are still there)."""
    (workdir / DOORS_FILE).write_text("".join(json.dumps(door) + "\n" for door in keep))


def cap_logs(folder: Path, pids: list[int], cap: int = LOG_CAP_BYTES) -> list[str]:
    """Roll every *.log in `folder` over `cap` bytes to *.log.1 (replacing the one before) and tell `pids` to
    reopen their logs (SIGUSR1: nginx's signal for it). One generation is kept: at most 2 x cap per log, plus
    what is written between two calls. Returns the names rolled."""
    rolled = []
    for log in sorted(folder.glob("*.log")):
        try:
            if log.stat().st_size > cap:
                os.replace(log, log.with_name(log.name + ".1"))
                rolled.append(log.name)
        except FileNotFoundError:
            continue
    if rolled:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
    return rolled


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
