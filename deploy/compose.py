"""N TorchServe replicas behind the door with Docker Compose, as people run compose: `make up`, `make rollout`.

    python -m deploy.compose up [--replicas 2] [--host 127.0.0.1] [--port 8090] [--grpc-port 7090]
    python -m deploy.compose rollout [--image digitlab:v2]     # one replica at a time, zero failed requests
    python -m deploy.compose down

`up` renders build/compose/door/ (the door's nginx config from ops/nginx.conf.template, its client keys,
and follow.json: the replicas' service name and ports), starts deploy/compose.yaml's door and N replicas
of the one `replica` service (`--scale`), all on one bridge network, and returns once the door follows
N ready replicas. Run again, it scales to the new N and gives the door any new client key (a reload, no
restart). Only the door publishes ports, on --host (127.0.0.1 by default), and Prometheus (service
`prometheus`, deploy/monitoring/), which scrapes the replicas and the door, on 127.0.0.1:$PROMETHEUS_PORT
(9090); its image is built when missing (Debian's prometheus), or $PROMETHEUS_IMAGE names another.

`rollout` replaces the running replicas one by one with --image: it starts one replica of the new image,
waits until the door sends to it (it is ready), then stops one old replica (SIGTERM: it turns not ready,
the door stops sending to it, it drains what it holds) and removes it. At no time are fewer replicas
ready than before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from deploy.image import (
    DOOR_IMAGE,
    IMAGE,
    PROMETHEUS_IMAGE,
    apt_install,
    build_prometheus,
    ensure_docker,
    image_config,
    image_exists,
)
from digitlab import catalog
from ops import door, door_tls, follow, probe

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
STATE = ROOT / "build" / "compose"
DOOR_DIR = STATE / "door"
CONTAINER_PREFIX = Path("/door")  # where deploy/compose.yaml mounts DOOR_DIR in the door's container
UP_SETTINGS = STATE / "up.json"  # what `up` was given: `rollout` and `down` run compose with the same
PROJECT = "digitlab"
SERVICE = "replica"  # deploy/compose.yaml's serving service: its name is what the door resolves
READY_TIMEOUT_S = 600.0  # a replica loads in ~10 s on an idle machine; it took 4 min here on 2 busy cores
STOP_GRACE_S = 45  # the replica's stop_grace_period in deploy/compose.yaml: drain (25 s) + TorchServe's stop
PROMETHEUS_SERVICE = "prometheus"  # deploy/compose.yaml's Prometheus (deploy/monitoring/prometheus.compose.yml)
PROMETHEUS_PORT = 9090  # its published port on 127.0.0.1, unless $PROMETHEUS_PORT says another
PROMETHEUS_READY_TIMEOUT_S = 60.0


def prometheus_image_default() -> str:
    return os.environ.get("PROMETHEUS_IMAGE") or PROMETHEUS_IMAGE


def prometheus_port_default() -> int:
    return int(os.environ.get("PROMETHEUS_PORT") or PROMETHEUS_PORT)


@dataclass(frozen=True)
class Up:
    """The door's published address and the images: every compose call renders the file with these."""

    host: str = door.DEFAULT_HOST
    port: int = door.DEFAULT_PORT
    grpc_port: int = door.DEFAULT_GRPC_PORT
    image: str = IMAGE
    door_image: str = DOOR_IMAGE
    # Prometheus: $PROMETHEUS_IMAGE (an official image) and $PROMETHEUS_PORT where set, when `up` was given none.
    prometheus_image: str = field(default_factory=prometheus_image_default)
    prometheus_port: int = field(default_factory=prometheus_port_default)
    tls: bool = False  # both of the door's ports over TLS (make up TLS=1)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def environment(self) -> dict[str, str]:
        # deploy/compose.yaml reads these. The door runs as the user who rendered its files, so its
        # owner-only key file stays owner-only.
        return {
            "DOOR_HOST": self.host,
            "DOOR_PORT": str(self.port),
            "DOOR_GRPC_PORT": str(self.grpc_port),
            "DIGITLAB_IMAGE": self.image,
            "DIGITLAB_DOOR_IMAGE": self.door_image,
            "PROMETHEUS_IMAGE": self.prometheus_image,
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "DOOR_USER": f"{os.getuid()}:{os.getgid()}",
        }

    @classmethod
    def saved(cls) -> Up:
        return cls(**json.loads(UP_SETTINGS.read_text())) if UP_SETTINGS.exists() else cls()


def follow_settings(props: dict[str, str]) -> follow.Settings:
    """Where the door finds the replicas: the service's name, and the ports the image's config listens on."""
    return follow.Settings(
        service=SERVICE,
        rest_port=urlsplit(props["inference_address"]).port,
        grpc_port=int(props["grpc_inference_port"]),
        ready_port=urlsplit(props["ready_address"]).port,
    )


def compose_tls(host: str) -> door.TlsFiles:
    """build/compose/door/tls/: the certificate the door serves over TLS (`make up TLS=1`), where the container
    sees it (/door/tls/). The user's ($DIGITLAB_TLS_CERT/KEY), copied in (the container sees only its prefix), or
    one from the local CA there (ca.pem: what clients trust), for localhost, 127.0.0.1, this host's name, the
    published address and $DIGITLAB_TLS_NAMES."""
    folder = DOOR_DIR / door.TLS_DIR
    given = door_tls.user_certificates()
    if given is not None:
        folder.mkdir(parents=True, exist_ok=True)
        door_tls.remove_local_certificates(folder)
        shutil.copyfile(given.cert, folder / door_tls.CERT)
        shutil.copyfile(given.key, folder / door_tls.KEY)
        (folder / door_tls.KEY).chmod(0o600)
        inside = CONTAINER_PREFIX / door.TLS_DIR
        return door.TlsFiles(cert=str(inside / door_tls.CERT), key=str(inside / door_tls.KEY))
    published = [host] if host not in ("0.0.0.0", "::") else []
    files, made = door_tls.local_certificates(folder, door_tls.server_names(published))
    if made:
        print(f"  TLS   made a local CA: clients trust {files.ca}")
    server = str(CONTAINER_PREFIX / door.TLS_DIR / door_tls.SERVER)  # read at every new connection
    return door.TlsFiles(cert=server, key=server, live=True)


def render(key_file: Path, tls: bool = False, host: str = door.DEFAULT_HOST) -> None:
    """build/compose/door/: nginx.conf (listening on the container's every interface, on the ports the compose
    file publishes, handing requests to the followed layer), follow.conf (that layer), keys.conf, follow.json;
    with `tls`, tls/ (compose_tls) and both ports over TLS."""
    props = image_config()
    limits = door.Limits.from_env()
    (DOOR_DIR / "tmp").mkdir(parents=True, exist_ok=True)  # no logs/: the door logs to its container's stdout
    door.ensure_client_key(key_file)
    settings = door.DoorSettings(
        replicas=None,
        models=catalog.NAMES,
        client_keys=tuple(door.read_client_keys(key_file)),
        upstream_key_file=None,
        host="0.0.0.0",
        port=door.DEFAULT_PORT,
        grpc_port=door.DEFAULT_GRPC_PORT,
        max_body_bytes=int(props["max_request_size"]),
        limits=limits,
        web_root=door.CONTAINER_WEB_ROOT,
        followed=CONTAINER_PREFIX,
        tls=compose_tls(host) if tls else None,
        dhparam=str(door.CONTAINER_DHPARAM),
        # The follower counts every answer (port 9145) and prints the door's log lines on the container's stdout
        # (docker logs / docker compose logs door): nginx writes no log file under build/compose/door.
        telemetry_socket=CONTAINER_PREFIX / door.TELEMETRY_SOCKET,
        stdout_logs=True,
    )
    conf, keys = door.render(settings)
    door.write_private(DOOR_DIR / door.CONFIG, conf)
    (DOOR_DIR / door.FOLLOW_CONFIG).write_text(door.render_follow(settings))
    door.write_private(DOOR_DIR / door.KEYS_INCLUDE, keys)
    (DOOR_DIR / follow.SETTINGS).write_text(json.dumps(asdict(follow_settings(props))))


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where installed, else Debian's docker-compose, installed if missing."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        apt_install("docker-compose")
    return ["docker-compose"]


def compose(*args: str, settings: Up | None = None, capture: bool = False) -> str:
    done = subprocess.run(
        [*compose_command(), "--file", str(COMPOSE_FILE), "--project-name", PROJECT, *args],
        check=True,
        env={**os.environ, **(settings or Up.saved()).environment()},
        capture_output=capture,
        text=True,
    )
    return done.stdout or ""


def replica_containers() -> list[str]:
    """IDs of the serving service's containers, running or not."""
    return compose("ps", "-q", SERVICE, capture=True).split()


def address(container: str) -> str:
    """The container's address on the compose network (what Docker's DNS gives the door)."""
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0] if out else ""


def followed(since: float = 0.0) -> dict:
    """The door's follower's last word, {"ready": [addresses], "resolved": [...], "reloads": n, "at": time},
    if it was written at or after `since` (Unix time); else nothing is known yet."""
    try:
        status = json.loads((DOOR_DIR / follow.STATUS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        status = {}
    return status if status.get("at", 0.0) >= since else {"ready": [], "resolved": []}


def wait_until(check, what: str, timeout: float = READY_TIMEOUT_S) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(
                f"{what} not ready after {timeout:.0f}s (docker logs: the door's and the replicas' JSON lines)"
            )
        time.sleep(0.5)
    return time.monotonic() - began


def door_ready(host: str, port: int, tls: bool = False) -> bool:
    if not tls:
        return probe.answers_ok(f"http://{host}:{port}/health", timeout=3)
    # Over TLS: the door's own CA when it made one, else the system's roots (the user's certificate).
    ca = DOOR_DIR / door.TLS_DIR / door_tls.CA_CERT
    context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
    address = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    try:
        with urllib.request.urlopen(f"https://{address}:{port}/health", timeout=3, context=context) as answer:
            return answer.status == 200
    except (OSError, ValueError):
        return False


def check_images(settings: Up) -> None:
    for image, target in ((settings.image, "make image"), (settings.door_image, "make door-image")):
        if not image_exists(image):
            raise SystemExit(f"no image {image}: build it with `{target}`")
    if not image_exists(settings.prometheus_image):
        if settings.prometheus_image != PROMETHEUS_IMAGE:
            raise SystemExit(f"no image {settings.prometheus_image} ($PROMETHEUS_IMAGE): docker pull it first")
        build_prometheus(settings.prometheus_image)  # Debian's prometheus on the base image: about a minute


def prometheus_url(settings: Up) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def up(n: int, key_file: Path, settings: Up) -> float:
    """Start (or scale to) n replicas and the door; returns seconds until the door followed n ready replicas."""
    if not 1 <= n <= 16:
        raise SystemExit("REPLICAS is 1 to 16")
    ensure_docker()
    check_images(settings)
    door_files = [DOOR_DIR / name for name in (door.CONFIG, door.KEYS_INCLUDE)]
    before = [f.read_text() if f.exists() else None for f in door_files]
    render(key_file, settings.tls, settings.host)
    STATE.mkdir(parents=True, exist_ok=True)
    UP_SETTINGS.write_text(json.dumps(asdict(settings)))
    began = time.monotonic()
    door_was_up = bool(compose("ps", "-q", "door", settings=settings, capture=True).strip())
    prometheus_was_up = bool(compose("ps", "-q", PROMETHEUS_SERVICE, settings=settings, capture=True).strip())
    compose("up", "--detach", "--scale", f"{SERVICE}={n}", settings=settings)
    if door_was_up and [f.read_text() for f in door_files] != before:
        compose("kill", "-s", "HUP", "door")  # the follower passes it to nginx: new keys or limits, no restart
    if prometheus_was_up:
        compose("kill", "-s", "HUP", PROMETHEUS_SERVICE)  # re-read deploy/monitoring/ (config, rules, console)
    since = time.time()  # a status from before this call (a door since stopped) says nothing about now

    def all_ready() -> bool:
        status = followed(since)
        return len(status["ready"]) == n == len(status["resolved"])

    wait_until(all_ready, f"{n} replica(s)")
    wait_until(lambda: door_ready(settings.host, settings.port, settings.tls), "the door")
    wait_until(
        lambda: probe.answers_ok(f"{prometheus_url(settings)}/-/ready", timeout=3),
        "Prometheus",
        timeout=PROMETHEUS_READY_TIMEOUT_S,
    )
    return time.monotonic() - began


def rollout(image: str) -> list[dict]:
    """Replace every running replica with one of `image`, one at a time; returns what happened to each."""
    ensure_docker()
    settings = Up(**{**asdict(Up.saved()), "image": image})
    check_images(settings)
    old = replica_containers()
    if not old:
        raise SystemExit("no replicas: make up first")
    steps = []
    for container in old:
        began = time.monotonic()
        before = set(replica_containers())
        # One more replica of the new image; --no-recreate keeps the old ones as they are.
        compose(
            "up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{SERVICE}={len(before) + 1}", SERVICE,
            settings=settings,
        )  # fmt: skip
        (new,) = set(replica_containers()) - before
        new_address, since = address(new), time.time()
        waited = wait_until(lambda: new_address in followed(since)["ready"], f"the new replica {new[:12]}")
        old_address = address(container)
        subprocess.run(["docker", "stop", "--time", str(STOP_GRACE_S), container], check=True, capture_output=True)
        subprocess.run(["docker", "rm", container], check=True, capture_output=True)
        steps.append({"old": old_address, "new": new_address, "ready_s": waited, "step_s": time.monotonic() - began})
        print(f"  {old_address} -> {new_address}: ready after {waited:.0f} s, old one drained and removed", flush=True)
    UP_SETTINGS.write_text(json.dumps(asdict(settings)))
    return steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "rollout", "down", "logs"])
    p.add_argument(
        "services", nargs="*", help="logs: of these services only (door, replica, prometheus), the last 100 lines each"
    )
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--host", default=door.DEFAULT_HOST, help="the door's published address (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=door.DEFAULT_PORT, help="the door's published REST port")
    p.add_argument("--grpc-port", type=int, default=door.DEFAULT_GRPC_PORT, help="the door's published gRPC port")
    p.add_argument("--image", default=os.environ.get("DIGITLAB_IMAGE", IMAGE), help="the serving image")
    p.add_argument(
        "--tls",
        action="store_true",
        help=f"the door's ports over TLS: ${door.CERT_ENV} and ${door.KEY_ENV}, else a local CA's certificate",
    )
    door.add_client_key_file_option(p)
    args = p.parse_args(argv)
    if args.action == "down":
        compose("down", "--remove-orphans")
        return
    if args.action == "logs":  # every container's stdout: one JSON object per line (docs/OPERATIONS.md, "Logs")
        compose("logs", "--no-color", "--tail", "100", *args.services)
        return
    if args.action == "rollout":
        began = time.monotonic()
        rollout(args.image)
        print(f"rolled out {args.image} in {time.monotonic() - began:.0f}s")
        return
    settings = Up(host=args.host, port=args.port, grpc_port=args.grpc_port, image=args.image, tls=args.tls)
    seconds = up(args.replicas, args.key_file, settings)
    rest = f"{settings.scheme}://{args.host}:{args.port}"
    print(f"{args.replicas} replica(s) and the door ready in {seconds:.1f}s")
    print(f"  REST  {rest}/predictions/<model>   health: {rest}/health")
    print(f"  gRPC  {'grpcs://' if args.tls else ''}{args.host}:{args.grpc_port} (StreamPredictions)")
    if args.tls and (ca := DOOR_DIR / door.TLS_DIR / door_tls.CA_CERT).is_file():
        print(f"  TLS   clients trust {ca.relative_to(ROOT)} (--ca, $DIGITLAB_CA, curl --cacert)")
    print(f"  metrics {prometheus_url(settings)}   console: {prometheus_url(settings)}/consoles/digitlab.html")
    print(f"  key   Authorization: Bearer $(.venv/bin/python -m ops.door key --key-file {args.key_file})")
    print("  logs  make logs [SERVICE=door]   (JSON lines)")
    print("  scale make up REPLICAS=N   roll out: make rollout IMAGE=...   stop: make down")


if __name__ == "__main__":
    main()
