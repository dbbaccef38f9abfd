"""The door: nginx in front of TorchServe, from the one template ops/nginx.conf.template.

    python -m ops.door start  [--host 127.0.0.1] [--port 8090] [--grpc-port 7090]   (make door)
    python -m ops.door reload     # re-read the client keys and TorchServe's key, no restart (make door-reload)
    python -m ops.door stop       # (make door-stop)
    python -m ops.door render     # print the config that start would run (it holds TorchServe's key)
    python -m ops.door key        # the newest client key, for curl

The door also serves the try-it page (web/) at / without a key; start prints its link, with the key
in the URL fragment, which the browser keeps and never sends.

Everything nginx writes (the rendered config, keys, pid, logs, temp files) lives in one runtime
directory, `.door/` by default, and nginx runs with that directory as its prefix.

Client keys: $DIGITLAB_API_KEY and every line of the key file (`.door/api_keys`) are accepted, so
a key is rotated by adding the new one, `make door-reload`, and deleting the old one later. When
neither exists, start writes the key file (mode 0600) with one fresh random key. A door that sends
TorchServe's key upstream registers its reload command with that instance (`instance.register_door`):
the supervisor runs it after renewing the key, and caps the door's logs (`instance.cap_logs`).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from digitlab.keyfiles import API_KEY_ENV, CLIENT_KEY_FILE, accepted_client_keys, newest_client_key, torchserve_keys
from ops import instance
from ops.instance import READY_PATH, ROOT

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
WEB_ROOT = ROOT / "web"  # the try-it page, served at / without a key
CONTAINER_WEB_ROOT = Path("/srv/web")  # where deploy/door.Dockerfile puts web/ in the door's image
RUNTIME = ROOT / ".door"
CONFIG, KEYS_INCLUDE, SETTINGS, PID = "nginx.conf", "keys.conf", "settings.json", "nginx.pid"
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_GRPC_PORT = "127.0.0.1", 8090, 7090
INSTALL_HINT = (
    "nginx not found: install it from the distribution "
    "(Debian/Ubuntu: apt-get install nginx-light; Fedora: dnf install nginx; macOS: brew install nginx)"
)
# Keys go verbatim into the config: only characters that cannot end a quoted nginx string.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_CLIENT_KEY_LENGTH = 16  # a client key is a password facing the network; TorchServe's own are 8 long
MAX_KEY_LENGTH = 100  # "Bearer " + key must fit the template's map_hash_bucket_size (128)
PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Limits:
    """What the door allows one client (one source address); the measurements are in docs/OPERATIONS.md.

    The server answers ~1,600 palindromes/s on 2 cores, a person well under 2 requests/s, and one
    64-step interpolation costs ~0.2 s of a core.
    """

    rate: int = 200  # predictions/s, REST and gRPC together: 1/8 of the server, 100x a person
    burst: int = 100  # over the rate, served at once before 429s: a batch fired from a connection pool
    heavy_rate: int = 5  # REST sample + interpolate per second: 64-step interpolations fill at most one core
    heavy_burst: int = 10  # a page of thumbnails at once
    in_flight: int = 16  # REST requests at once: above a client's usual pool of 10 connections
    heavy_in_flight: int = 4  # REST sample + interpolate at once: one interpolate batch (batchSize 4)
    grpc_in_flight: int = 4  # gRPC calls at once: the model is inside the body, any call may be an interpolation
    read_timeout_s: int = 70  # upstream, per read: above every model's responseTimeout (at most 60 s)
    per_client: bool = True  # False: none of the per-client limits above (a limiter in front does it)
    # Who a client is: its source address, unless the connection comes from one of these proxies (addresses or
    # networks), whose X-Forwarded-For then names it. Behind Docker's userland proxy or a load balancer every
    # client arrives from one address; trusting that proxy keeps the limits per client. Never trust more.
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        """The shipped limits with what the environment changes: DIGITLAB_LIMIT_<FIELD> (e.g.
        DIGITLAB_LIMIT_RATE=400) sets one, DIGITLAB_LIMITS=off switches every per-client limit off. A bad
        value is refused with the variable's name and what it accepts."""
        switch = environ.get(LIMITS_SWITCH_ENV, "on").strip().lower()
        if switch not in ("on", "off"):
            raise ValueError(f"{LIMITS_SWITCH_ENV} is on or off, got {switch!r}")
        values: dict[str, Any] = {"per_client": switch == "on"}
        for name in LIMIT_FIELDS:
            variable = limit_env(name)
            if (text := environ.get(variable)) is None:
                continue
            if not text.strip().isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise ValueError(f"{variable} is a whole number from 1 to {MAX_LIMIT}, got {text!r}")
            values[name] = int(text)
        proxies = [p.strip() for p in environ.get(TRUSTED_PROXIES_ENV, "").split(",") if p.strip()]
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{TRUSTED_PROXIES_ENV} is a comma-separated list of addresses or networks "
                    f"(e.g. 172.17.0.1,10.0.0.0/8), got {proxy!r}"
                ) from None
        return cls(**values, trusted_proxies=tuple(proxies))


LIMITS = Limits()
LIMITS_SWITCH_ENV = "DIGITLAB_LIMITS"  # "off": no per-client limits (behind another limiter; benchmarks)
LIMIT_FIELDS = tuple(f.name for f in fields(Limits) if f.name not in ("per_client", "trusted_proxies"))
TRUSTED_PROXIES_ENV = "DIGITLAB_TRUSTED_PROXIES"
MAX_LIMIT = 1_000_000


def limit_env(name: str) -> str:
    """The environment variable that sets one limit: rate -> DIGITLAB_LIMIT_RATE."""
    return f"DIGITLAB_LIMIT_{name.upper()}"


# What the door answers itself when no replica can (both nginx layers of a followed door say the same).
UNAVAILABLE_MESSAGE = "no model server is answering; retry later"
TIMEOUT_MESSAGE = "the model server did not answer in time"
UPSTREAM_KINDS = ("rest", "grpc", "ready")  # a Replica's fields, one upstream each
FOLLOW_TEMPLATE = Path(__file__).resolve().parent / "nginx.follow.conf.template"
FOLLOW_CONFIG = "follow.conf"  # a followed door's second nginx, beside nginx.conf (ops/follow.py runs both)
FOLLOWED_DIR = "upstreams"  # under the door's prefix: the followed layer's server lists and unix sockets
NO_SERVER = "127.0.0.1:9"  # the placeholder of an upstream with no replica ready (marked down, never tried)


@dataclass(frozen=True)
class Replica:
    """One TorchServe behind the door: REST inference, gRPC inference and readiness, each host:port."""

    rest: str
    grpc: str
    ready: str


@dataclass(frozen=True)
class Door:
    """Everything `render` needs besides the keys, saved at start so that reload renders the same door."""

    host: str
    port: int
    grpc_port: int
    replicas: list[Replica]
    models: list[str]
    torchserve_key_file: str | None  # TorchServe's key_file.json; None when its token auth is off
    client_key_file: str
    max_body_bytes: int
    limits: Limits = LIMITS

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Door:
        data = json.loads(text)
        limits = Limits(**{**data["limits"], "trusted_proxies": tuple(data["limits"].get("trusted_proxies", ()))})
        return cls(**{**data, "replicas": [Replica(**r) for r in data["replicas"]], "limits": limits})


def host_port(url: str) -> str:
    """ "http://127.0.0.1:8080" -> "127.0.0.1:8080"."""
    return urlsplit(url).netloc


def replica(endpoints: instance.Endpoints) -> Replica:
    """The door's view of one TorchServe: its inference listeners, and its supervisor's readiness address."""
    return Replica(rest=host_port(endpoints.inference), grpc=endpoints.grpc_inference, ready=host_port(endpoints.ready))


# -- keys --------------------------------------------------------------------------------------------


def checked_key(key: str, min_length: int = MIN_CLIENT_KEY_LENGTH) -> str:
    if not KEY_CHARACTERS.fullmatch(key) or not min_length <= len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"a key is {min_length} to {MAX_KEY_LENGTH} characters from A-Z a-z 0-9 . _ ~ + / = -")
    return key


def read_client_keys(key_file: Path) -> list[str]:
    """$DIGITLAB_API_KEY, then every non-empty line of `key_file` (oldest first, newest last), each checked."""
    return [checked_key(k) for k in accepted_client_keys(key_file)]


def ensure_client_key(key_file: Path) -> None:
    """Write `key_file` (mode 0600) with one fresh key when neither it nor $DIGITLAB_API_KEY exists."""
    if os.environ.get(API_KEY_ENV) or key_file.exists():
        return
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def client_key(key_file: Path) -> str:
    """The key a client should send: the key file's last line, else $DIGITLAB_API_KEY (as the clients read it)."""
    key = newest_client_key(key_file)
    if key is None:
        raise SystemExit(f"no client key: set ${API_KEY_ENV} or start the door (make door) to create {key_file}")
    return key


def torchserve_key(key_file: str | None) -> str | None:
    """TorchServe's inference key, which the door sends upstream; None when TorchServe runs without auth."""
    return torchserve_keys(key_file)["inference"] if key_file else None


# -- rendering ---------------------------------------------------------------------------------------


# The per-client limit directives of a prediction route; with limits off, a comment saying so instead.
REST_LIMITS = """# nodelay: a burst within budget is served at once, not paced; beyond it, 429 at once.
            limit_req zone=requests burst={{ burst }} nodelay;
            limit_req zone=heavy_requests burst={{ heavy_burst }} nodelay;
            limit_conn in_flight {{ in_flight }};
            limit_conn heavy_in_flight {{ heavy_in_flight }};"""
GRPC_LIMITS = """limit_req zone=requests burst={{ burst }} nodelay;
            limit_conn grpc_in_flight {{ grpc_in_flight }};"""
LIMITS_OFF = f"# no per-client limits: {LIMITS_SWITCH_ENV}=off (a limiter in front of the door does it)"


def real_client(proxies: tuple[str, ...]) -> str:
    """nginx's realip settings: trust X-Forwarded-For from these proxies only (none: the peer is the client)."""
    if not proxies:
        return f"# the client is the connection's source address ({TRUSTED_PROXIES_ENV} names proxies to trust)"
    trusted = "\n    ".join(f"set_real_ip_from {ipaddress.ip_network(p, strict=False)};" for p in proxies)
    return f"{trusted}\n    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;"


def fill(template: str, values: dict[str, object]) -> str:
    """Replace every {{ name }}; a field without a value is an error, not an empty string."""
    missing = set(PLACEHOLDER.findall(template)) - values.keys()
    if missing:
        raise KeyError(f"template fields without a value: {sorted(missing)}")
    filled = PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    return fill(filled, values) if PLACEHOLDER.search(filled) else filled  # fields inside filled-in blocks


def server_lines(addresses: list[str]) -> str:
    """An upstream's server lines; none given (no replica ready): one server marked down, so nginx answers
    502 at once (the door's 503 "no model server is answering") instead of refusing the config."""
    if not addresses:
        return f"        server {NO_SERVER} down;"
    # Passive health checks: after 3 failures in 10 s a replica rests for 10 s, its peers take its share.
    return "\n".join(f"        server {a} max_fails=3 fail_timeout=10s;" for a in addresses)


def followed_sockets(prefix: Path) -> dict[str, Path]:
    """{kind: the unix socket where a followed door's second nginx takes that kind of request}."""
    return {kind: prefix / FOLLOWED_DIR / f"{kind}.sock" for kind in UPSTREAM_KINDS}


def render_follow(prefix: Path, max_body_bytes: int, limits: Limits = LIMITS) -> str:
    """follow.conf: the layer of a followed door that balances over the ready replicas (its template says why)."""
    sockets = followed_sockets(prefix)
    return fill(
        FOLLOW_TEMPLATE.read_text(),
        {
            "followed_dir": FOLLOWED_DIR,
            "rest_socket": sockets["rest"],
            "grpc_socket": sockets["grpc"],
            "ready_socket": sockets["ready"],
            "read_timeout": f"{limits.read_timeout_s}s",
            "max_body_bytes": max_body_bytes,
            "unavailable_message": UNAVAILABLE_MESSAGE,
            "timeout_message": TIMEOUT_MESSAGE,
        },
    )


def upstream_includes(replicas: list[Replica]) -> dict[str, str]:
    """{file under FOLLOWED_DIR: its server lines} for a followed door (ops/follow.py writes them)."""
    return {f"{kind}.conf": server_lines([getattr(r, kind) for r in replicas]) + "\n" for kind in UPSTREAM_KINDS}


def render(
    replicas: list[Replica] | None,
    models: list[str],
    client_keys: list[str],
    upstream_key: str | None,
    max_body_bytes: int,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    grpc_port: int = DEFAULT_GRPC_PORT,
    limits: Limits = LIMITS,
    web_root: Path = WEB_ROOT,
    followed: Path | None = None,
) -> tuple[str, str]:
    """(nginx.conf, keys.conf) for a door on host:port (REST) and host:grpc_port (gRPC).

    `replicas` are the TorchServe instances behind the door, one `Replica` each (REST and gRPC
    inference addresses, readiness address). None: they change while the door runs (compose); the door
    then sends every request to a second nginx on unix sockets under `followed` (the door's prefix as
    nginx sees it), whose config is render_follow's and whose server lists ops/follow.py keeps to the
    replicas that are ready.
    With several, nginx balances round robin, skips a replica that fails 3 times in 10 s for 10 s (passive
    health check), and retries a prediction once on another replica when the first refuses or resets the
    connection or answers 404/502/503/504 before sending anything (safe: predictions have no side effects).
    /health is ready while one replica's readiness check answers 200.
    `models` are the served model names (the only /predictions/<model> routes). `client_keys` are the
    accepted keys. `upstream_key` is TorchServe's inference key, sent upstream in place of the client's;
    None sends no Authorization (replicas running with disable_token_authorization=true, in containers).
    `max_body_bytes` is the replicas' max_request_size (config.properties), enforced at the door.
    `web_root` is where the door finds the try-it page's files (in a container: where its image put them).
    """
    if replicas == [] or not models or not client_keys:
        raise ValueError("a door needs at least one replica, one model and one client key")
    if replicas is None:  # followed: everything goes to the second nginx's sockets (render_follow)
        if followed is None:
            raise ValueError("a followed door (replicas=None) needs the prefix its sockets live under")
        servers = {kind: f"        server unix:{sock};" for kind, sock in followed_sockets(followed).items()}
    else:
        servers = {kind: server_lines([getattr(r, kind) for r in replicas]) for kind in UPSTREAM_KINDS}
    values = {
        **asdict(limits),
        "read_timeout": f"{limits.read_timeout_s}s",
        "real_client": real_client(limits.trusted_proxies),
        "rest_limits": REST_LIMITS if limits.per_client else LIMITS_OFF,
        "grpc_limits": GRPC_LIMITS if limits.per_client else LIMITS_OFF,
        "listen_rest": f"{host}:{port}",
        "listen_grpc": f"{host}:{grpc_port}",
        "rest_servers": servers["rest"],
        "grpc_servers": servers["grpc"],
        "ready_servers": servers["ready"],
        "ready_path": READY_PATH,
        "web_root": web_root.resolve(),
        "models": "|".join(re.escape(m) for m in models),
        "upstream_authorization": f"Bearer {checked_key(upstream_key, min_length=1)}" if upstream_key else "",
        "max_body_bytes": max_body_bytes,
        "max_body_kib": max_body_bytes // 1024,
        "unavailable_message": UNAVAILABLE_MESSAGE,
        "timeout_message": TIMEOUT_MESSAGE,
    }
    keys = "".join(f'    "Bearer {checked_key(k)}" 1;\n' for k in client_keys)
    return fill(TEMPLATE.read_text(), values), keys


def render_door(door: Door, web_root: Path = WEB_ROOT) -> tuple[str, str]:
    return render(
        door.replicas,
        door.models,
        read_client_keys(Path(door.client_key_file)),
        torchserve_key(door.torchserve_key_file),
        door.max_body_bytes,
        door.host,
        door.port,
        door.grpc_port,
        door.limits,
        web_root,
    )


# -- running nginx -----------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    """nginx on PATH, or where distributions put it (/usr/sbin is not on every user's PATH)."""
    found = [p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)]
    return shutil.which("nginx") or next(iter(found), None)


def require_nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        raise SystemExit(INSTALL_HINT)
    return binary


def nginx_command(runtime: Path, config: str = CONFIG) -> list[str]:
    """nginx with `runtime` as its prefix and `config` (under it) as its configuration."""
    # -e stderr: until it has read the config, nginx logs to its built-in path (/var/log/nginx/ on
    # some distributions), which a user who is not root cannot open.
    return [require_nginx(), "-p", f"{runtime.resolve()}/", "-c", config, "-e", "stderr"]


def nginx(runtime: Path, *args: str, config: str = CONFIG) -> subprocess.CompletedProcess:
    return subprocess.run([*nginx_command(runtime, config), *args], capture_output=True, text=True, timeout=30)


def write_private(path: Path, text: str) -> None:
    """The config and keys.conf hold keys: readable by their owner only (nginx's master reads them)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def published_page_path(runtime: Path) -> Path:
    digest = hashlib.sha256(str(runtime.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"digitlab-web-{digest}"


def published_page(runtime: Path) -> Path:
    """Where this door serves the try-it page from: a copy of web/ that nginx's workers can read.

    Started as root, nginx runs its workers as `nobody`, which cannot traverse a checkout under a
    private directory (a clone in `mktemp -d` is 0700): web/ itself answered 404 there. One copy per
    runtime, in the system's temp directory, world-readable; `stop` removes it."""
    page = published_page_path(runtime)
    shutil.rmtree(page, ignore_errors=True)
    shutil.copytree(WEB_ROOT, page)
    for path in [page, *page.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return page


def install_config(runtime: Path, door: Door) -> None:
    """Render `door` into `runtime` and have nginx check it; the previous files come back if it fails."""
    for sub in ("logs", "tmp"):
        (runtime / sub).mkdir(parents=True, exist_ok=True)
    conf, keys = render_door(door, published_page(runtime))
    saved = {name: (runtime / name).read_text() for name in (CONFIG, KEYS_INCLUDE) if (runtime / name).exists()}
    write_private(runtime / CONFIG, conf)
    write_private(runtime / KEYS_INCLUDE, keys)
    check = nginx(runtime, "-t", "-q")
    if check.returncode != 0:
        for name, text in saved.items():
            write_private(runtime / name, text)
        raise RuntimeError(f"nginx refused the rendered config:\n{check.stderr.strip()}")
    (runtime / SETTINGS).write_text(door.to_json())


def master_pid(runtime: Path) -> int | None:
    """The running nginx master of `runtime`, or None."""
    try:
        pid = int((runtime / PID).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if instance.alive(pid) else None


def workers(master: int) -> set[int]:
    """PIDs of the master's children (its worker processes), from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # exited while we looked
        if int(fields[1]) == master:
            children.add(int(stat.parent.name))
    return children


def start(runtime: Path, door: Door) -> int:
    """Render, check and start nginx for `door` (daemonised); returns the master's PID.

    nginx binds its listeners before it returns, so the door accepts connections from then on.
    """
    require_nginx()
    if master_pid(runtime):
        raise RuntimeError(f"the door is already running (pid {master_pid(runtime)}): make door-stop first")
    ensure_client_key(Path(door.client_key_file))
    install_config(runtime, door)
    started = nginx(runtime)
    if started.returncode != 0:
        raise RuntimeError(f"nginx did not start:\n{started.stderr.strip()}")
    pid = master_pid(runtime)
    if pid is None:
        raise RuntimeError(f"nginx exited at start; see {runtime / 'logs' / 'error.log'}")
    if door.torchserve_key_file:  # the supervisor runs this command when it renews TorchServe's keys
        prefix = runtime.resolve()
        reload_command = [sys.executable, "-m", "ops.door", "reload", "--runtime", str(prefix)]
        workdir = Path(door.torchserve_key_file).parent
        instance.register_door(workdir, reload_command, ROOT, prefix / "logs", prefix / PID)
    return pid


def reload(runtime: Path = RUNTIME) -> int:
    """Re-render (re-reading client keys and TorchServe's key) and reload nginx: no restart, no dropped call.

    Returns the number of accepted client keys once the old worker has finished its requests and
    exited (at most STOP_GRACE_S), so that from then on every request meets the new keys.
    """
    pid = master_pid(runtime)
    if pid is None:
        raise RuntimeError("the door is not running: make door first")
    door = Door.from_json((runtime / SETTINGS).read_text())
    install_config(runtime, door)
    old = workers(pid)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and (workers(pid) & old or not workers(pid)):
        time.sleep(0.05)
    return len(read_client_keys(Path(door.client_key_file)))


def stop(runtime: Path = RUNTIME) -> bool:
    """Fast shutdown (SIGTERM) of the door's nginx; False when it was not running."""
    pid = master_pid(runtime)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while instance.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # daemonised: not our child
    if instance.alive(pid):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(published_page_path(runtime), ignore_errors=True)
    return True


# -- command line ------------------------------------------------------------------------------------


def add_client_key_file_option(p: argparse.ArgumentParser) -> None:
    """--key-file as the deployments (compose, Kubernetes) read it: the door's client keys."""
    p.add_argument(
        "--key-file",
        type=Path,
        default=RUNTIME / CLIENT_KEY_FILE,
        help=f"client keys, one per line (with or instead of ${API_KEY_ENV})",
    )


def door_from_args(args: argparse.Namespace) -> Door:
    props = instance.read_properties(args.config)
    ts_keys = instance.key_file(args.torchserve_workdir)
    return Door(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        replicas=[replica(instance.endpoints(props))],
        models=args.models or instance.archives(),
        torchserve_key_file=str(ts_keys) if ts_keys.is_file() else None,
        client_key_file=str(args.key_file),
        max_body_bytes=int(props["max_request_size"]),
        limits=Limits.from_env(),
    )


def page_link(url: str, key: str) -> str:
    """The try-it page with `key` in the URL fragment (web/app.js reads it from there)."""
    return f"{url}/#key={key}"


def print_endpoints(door: Door, pid: int) -> None:
    print(f"door up (nginx pid {pid}) for models: {', '.join(door.models)}")
    rest = f"http://{door.host}:{door.port}"
    # The key rides in the fragment, which the browser never sends: the page reads it and keeps it for the tab.
    print(f"  page    {page_link(rest, client_key(Path(door.client_key_file)))}")
    print(f"  REST    {rest}/predictions/<model>   health: {rest}/health")
    print(f"  gRPC    {door.host}:{door.grpc_port} (StreamPredictions only)")
    print(f"  key     Authorization: Bearer $(.venv/bin/python -m ops.door key)   [{door.client_key_file}]")
    if door.torchserve_key_file is None:
        print("  note    no TorchServe key file: nothing is sent upstream (TorchServe must run without token auth)")
    print("  reload  make door-reload (after changing keys); stop: make door-stop")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "reload", "render", "key"])
    p.add_argument("--runtime", type=Path, default=RUNTIME, help="nginx prefix: config, keys, pid, logs")
    p.add_argument("--host", default=DEFAULT_HOST, help="address the door listens on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="REST port")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port")
    p.add_argument(
        "--config", type=Path, default=instance.DEFAULT_CONFIG, help="TorchServe's config (upstream addresses)"
    )
    p.add_argument(
        "--torchserve-workdir", type=Path, default=instance.DEFAULT_WORKDIR, help="where TorchServe wrote key_file.json"
    )
    p.add_argument("--key-file", type=Path, help="client keys, one per line (default: RUNTIME/api_keys)")
    p.add_argument("--models", nargs="+", help="served models (default: the archives in model_store/)")
    args = p.parse_args(argv)
    args.key_file = args.key_file or args.runtime / CLIENT_KEY_FILE
    try:
        if args.action == "start":
            door = door_from_args(args)
            print_endpoints(door, start(args.runtime, door))
        elif args.action == "stop":
            print("door stopped" if stop(args.runtime) else "door was not running")
        elif args.action == "reload":
            print(f"door reloaded: {reload(args.runtime)} client key(s) accepted")
        elif args.action == "render":
            print(render_door(door_from_args(args))[0])
        else:
            print(client_key(args.key_file))
    except (RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
