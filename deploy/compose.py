"""N TorchServe replicas behind the door on this host, with Docker Compose: `make up` / `make down`.

    python -m deploy.compose up [--replicas 2] [--host 127.0.0.1] [--port 8090] [--grpc-port 7090]
    python -m deploy.compose down

`up` renders build/compose/ (each replica's TorchServe config, the door's nginx config and keys from
ops/nginx.conf.template), starts deploy/compose.yaml's door and the first N replicas, and returns
once every replica and the door are ready. All of it on loopback, with host networking: replica i
listens on port 18000 + 100 i + (the default port's last two digits), e.g. replica 1 on 18180 (REST),
18170 (gRPC) and 18183 (readiness).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from deploy.image import DOOR_IMAGE, IMAGE, apt_install, ensure_docker, image_config, image_exists
from ops import door
from ops.instance import write_properties
from ops.ready import is_ready, ready_url
from tools.build_archives import ARCHIVES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
STATE = ROOT / "build" / "compose"
PROJECT = "digitlab"
REPLICA_PORT_BASE, REPLICA_PORT_STEP = 18000, 100
LOOPBACK = "127.0.0.1"
URL_LISTENERS = ("inference_address", "management_address", "metrics_address", "ready_address")
GRPC_LISTENERS = (
    ("grpc_inference_address", "grpc_inference_port"),
    ("grpc_management_address", "grpc_management_port"),
)
READY_TIMEOUT_S = 600.0  # a replica loads in ~10 s on an idle machine; it took 4 min here on 2 busy cores


def replica_port(index: int, default_port: int) -> int:
    return REPLICA_PORT_BASE + REPLICA_PORT_STEP * index + default_port % 100


def replica_props(index: int, props: dict[str, str]) -> dict[str, str]:
    """The image's config for replica `index`: every listener on loopback, on the replica's own ports."""
    out = dict(props)
    for key in URL_LISTENERS:
        out[key] = f"http://{LOOPBACK}:{replica_port(index, urlsplit(props[key]).port)}"
    for address, port in GRPC_LISTENERS:
        out[address], out[port] = LOOPBACK, str(replica_port(index, int(props[port])))
    return out


def upstream(props: dict[str, str]) -> door.Replica:
    return door.Replica(
        rest=door.host_port(props["inference_address"]),
        grpc=f"{props['grpc_inference_address']}:{props['grpc_inference_port']}",
        ready=door.host_port(props["ready_address"]),
    )


def replica_services() -> list[str]:
    """The replica services deploy/compose.yaml defines, in order: how many `up` can start."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return sorted((s for s in services if s.startswith("replica-")), key=lambda s: int(s.split("-")[1]))


def render(n: int, key_file: Path, host: str, port: int, grpc_port: int) -> list[dict[str, str]]:
    """build/compose/: replicas/replica-i.properties for i in 1..n, door/ (nginx.conf, keys.conf); their props."""
    props = [replica_props(i, image_config()) for i in range(1, n + 1)]
    replicas_dir, door_dir = STATE / "replicas", STATE / "door"
    shutil.rmtree(replicas_dir, ignore_errors=True)
    replicas_dir.mkdir(parents=True)
    for i, p in enumerate(props, start=1):
        write_properties(replicas_dir / f"replica-{i}.properties", p)
    for sub in ("logs", "tmp"):
        (door_dir / sub).mkdir(parents=True, exist_ok=True)
    door.ensure_client_key(key_file)
    conf, keys = door.render(
        [upstream(p) for p in props],
        list(ARCHIVES),
        door.read_client_keys(key_file),
        upstream_key=None,
        host=host,
        port=port,
        grpc_port=grpc_port,
        max_body_bytes=int(image_config()["max_request_size"]),
        limits=door.Limits.from_env(),
        web_root=door.CONTAINER_WEB_ROOT,
    )
    door.write_private(door_dir / door.CONFIG, conf)
    door.write_private(door_dir / door.KEYS_INCLUDE, keys)
    return props


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where installed, else Debian's docker-compose, installed if missing."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        apt_install("docker-compose")
    return ["docker-compose"]


def compose(*args: str, capture: bool = False) -> str:
    # The door runs as the user who rendered its files, so its owner-only key file stays owner-only.
    env = {**os.environ, "DOOR_USER": f"{os.getuid()}:{os.getgid()}"}
    done = subprocess.run(
        [*compose_command(), "--file", str(COMPOSE_FILE), "--project-name", PROJECT, *args],
        check=True,
        env=env,
        capture_output=capture,
        text=True,
    )
    return done.stdout or ""


def container_id(service: str) -> str:
    out = compose("ps", "-q", service, capture=True).split()
    if not out:
        raise RuntimeError(f"no container for {service}: make up first")
    return out[0]


def wait_until(check, what: str, timeout: float = READY_TIMEOUT_S) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s (docker logs, build/compose/door/logs/)")
        time.sleep(0.5)
    return time.monotonic() - began


def door_ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def up(n: int, key_file: Path, host: str, port: int, grpc_port: int) -> float:
    """Start the door and replicas 1..n (stopping any beyond n); returns seconds until all were ready."""
    services = replica_services()
    if not 1 <= n <= len(services):
        raise SystemExit(f"REPLICAS must be 1 to {len(services)} (the replica services in {COMPOSE_FILE.name})")
    ensure_docker()
    # deploy/compose.yaml reads the same variables.
    images = (os.environ.get("DIGITLAB_IMAGE", IMAGE), os.environ.get("DIGITLAB_DOOR_IMAGE", DOOR_IMAGE))
    for image, target in zip(images, ("make image", "make door-image")):
        if not image_exists(image):
            raise SystemExit(f"no image {image}: build it with `{target}`")
    door_files = [STATE / "door" / name for name in (door.CONFIG, door.KEYS_INCLUDE)]
    before = [f.read_text() if f.exists() else None for f in door_files]
    props = render(n, key_file, host, port, grpc_port)
    began = time.monotonic()
    if services[n:]:
        compose("rm", "--stop", "--force", *services[n:])
    compose("up", "--detach", "door", *services[:n])
    for i, p in enumerate(props, start=1):
        wait_until(lambda: is_ready(ready_url(p)), f"replica-{i}")
    # nginx read its config when it started: a changed replica list or key needs a restart.
    if [f.read_text() for f in door_files] != before:
        compose("restart", "door")
    wait_until(lambda: door_ready(host, port), "the door")
    return time.monotonic() - began


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--host", default=door.DEFAULT_HOST, help="the door's address")
    p.add_argument("--port", type=int, default=door.DEFAULT_PORT, help="the door's REST port")
    p.add_argument("--grpc-port", type=int, default=door.DEFAULT_GRPC_PORT, help="the door's gRPC port")
    door.add_client_key_file_option(p)
    args = p.parse_args(argv)
    if args.action == "down":
        compose("down")
        return
    seconds = up(args.replicas, args.key_file, args.host, args.port, args.grpc_port)
    print(f"{args.replicas} replica(s) and the door ready in {seconds:.1f}s")
    print(f"  REST  http://{args.host}:{args.port}/predictions/<model>   health: http://{args.host}:{args.port}/health")
    print(f"  gRPC  {args.host}:{args.grpc_port} (StreamPredictions)")
    print(f"  key   Authorization: Bearer $(.venv/bin/python -m ops.door key --key-file {args.key_file})")
    print("  stop  make down")


if __name__ == "__main__":
    main()
