"""What a door is, as typed values: its per-client limits, its replicas, the door saved at start (`Door`)
and everything one rendering of it needs (`DoorSettings`). No file is written and no process started here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops import instance
from ops.door_keys import ClientKey, checked_client_keys, read_client_keys
from ops.door_tls import DHPARAM, TlsFiles
from ops.instance import ROOT

TELEMETRY_SOCKET = "telemetry.sock"  # in the shared folder: what ops/door_metrics.py counts
WEB_ROOT = ROOT / "web"  # the try-it page, served at / without a key
CONTAINER_WEB_ROOT = Path("/srv/web")  # where deploy/door.Dockerfile puts web/ in the door's image
CONTAINER_PREFIX = Path("/door")  # the door's prefix in its image (compose and Kubernetes mount it there)
CONTAINER_DHPARAM = Path("/app/ops/ffdhe2048.pem")  # ops/ffdhe2048.pem in the door's image (it copies ops/)
# Debian's libnginx-mod-stream (the door image installs it): the layer that counts connections per address.
DEBIAN_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
# Debian's libnginx-mod-http-js (njs): a door in front of a TorchServe with token authorization reads its key with it.
DEBIAN_JS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
# The script that reads TorchServe's key per request (js_set); nginx's master reads it when it loads the config.
TORCHSERVE_KEY_SCRIPT = Path(__file__).resolve().parent / "torchserve_key.js"
# What a path may hold to be written into the config inside double quotes: no quote, backslash, `$` or brace.
CONFIG_PATH = re.compile(r"/[A-Za-z0-9._/@+~,:=-]*")
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_GRPC_PORT = "127.0.0.1", 8090, 7090
LIMITS_SWITCH_ENV = "DIGITLAB_LIMITS"  # "off": no per-client limits (behind another limiter; benchmarks)
TRUSTED_PROXIES_ENV = "DIGITLAB_TRUSTED_PROXIES"
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class Limits:
    """What the door allows one client (one key for predictions, one address for the rest); measured in
    docs/OPERATIONS.md.

    The server answers ~1,600 palindromes/s on 2 cores, a person well under 2 requests/s, and one
    64-step interpolation costs ~0.2 s of a core.
    """

    rate: int = 200  # predictions/s, REST and gRPC together: 1/8 of the server, 100x a person
    burst: int = 100  # over the rate, served at once before 429s: a batch fired from a connection pool
    heavy_rate: int = 5  # REST sample + interpolate per second: 64-step interpolations fill at most one core
    heavy_burst: int = 10  # a page of thumbnails at once
    in_flight: int = 16  # REST requests at once: above a client's usual pool of 10 connections
    # REST sample + interpolate and gRPC calls at once: half of one interpolate batch (batchSize 4), so that no
    # key holds a heavy model's whole batch and another key's call always finds room in the next one.
    heavy_in_flight: int = 2
    grpc_in_flight: int = 2  # gRPC calls at once: the model is inside the body, any call may be an interpolation
    read_timeout_s: int = 70  # upstream, per read: above every model's responseTimeout (at most 60 s)
    # Counted before a byte of a request is read (the stream layer): connections open at once from one address,
    # half-sent requests included. A client pool of 10, a browser's 6 and a few people behind one NAT fit; one
    # address can no longer hold the door's connections (docs/OPERATIONS.md, "Capacity").
    connections: int = 64
    # What the door answers itself (no key, no such route, a malformed request, the try-it page) per second:
    # far above a person loading the page (5 files), far below a flood; over it, 429, and refusals go unlogged.
    local_rate: int = 20
    local_burst: int = 40
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
LIMIT_FIELDS = tuple(f.name for f in fields(Limits) if f.name not in ("per_client", "trusted_proxies"))


def limit_env(name: str) -> str:
    """The environment variable that sets one limit: rate -> DIGITLAB_LIMIT_RATE."""
    return f"DIGITLAB_LIMIT_{name.upper()}"


@dataclass(frozen=True)
class Capacity:
    """What the door holds at once, whatever its clients do (docs/OPERATIONS.md, "Capacity").

    Every client connection costs the door three: the stream layer's (where the per-address cap counts it), its
    hand-over to the HTTP layer on a unix socket, and the HTTP layer's side of it; a request in flight to
    TorchServe adds one. So a worker holds worker_connections / 3 client connections: 2,730, i.e. 42 addresses
    at their cap of 64 (Limits.connections), and twice that with the two workers of a 2-core machine.
    """

    workers: str = "auto"  # nginx worker processes: one per core (a number: that many)
    worker_connections: int = 8192  # connections per worker; preallocated, ~0.5 KB each (4 MB a worker)
    worker_rlimit_nofile: int = 16384  # file descriptors per worker: a connection is one, plus logs and cache
    health_cache_s: int = 1  # /health answers from what the readiness check said at most this long ago


CAPACITY = Capacity()


@dataclass(frozen=True)
class Replica:
    """One TorchServe behind the door: REST inference, gRPC inference and readiness, each host:port."""

    rest: str
    grpc: str
    ready: str


def host_port(url: str) -> str:
    """ "http://127.0.0.1:8080" -> "127.0.0.1:8080"."""
    return urlsplit(url).netloc


def replica(endpoints: instance.Endpoints) -> Replica:
    """The door's view of one TorchServe: its inference listeners, and its supervisor's readiness address."""
    return Replica(rest=host_port(endpoints.inference), grpc=endpoints.grpc_inference, ready=host_port(endpoints.ready))


@dataclass(frozen=True)
class DoorSettings:
    """Everything one rendering of a door needs (door_render.render), checked: a DoorSettings is renderable.

    `replicas` are the TorchServe instances behind the door. None: they change while the door runs
    (compose); the door then sends every request to a second nginx on unix sockets under `followed` (the
    door's prefix as nginx sees it), which ops/follow.py keeps to the replicas that are ready.
    `models` are the served model names (the only /predictions/<model> routes). `client_keys` are the
    accepted keys, each with the id that names its client (a line "<key>" or "<id> <key>"; a key alone is given
    the id door_keys.key_id makes of it). `upstream_key_file` is TorchServe's key_file.json (an absolute path as
    nginx sees it), from which the door reads TorchServe's inference key for every request it sends upstream, in
    place of the client's key (ops/torchserve_key.js, with the njs module `js_module`: None when built in); the
    rendered config never holds TorchServe's key. None sends no Authorization (replicas running with
    disable_token_authorization=true, in containers). `worker_user` ("user group") is who nginx's workers run
    as when nginx starts as root: the key file's owner, so that they can read it (None: nginx's default).
    (`upstream_key`, the key itself, is gone: a config holding it was stale the moment TorchServe renewed it;
    only None is still accepted, as the containers' callers pass it.)
    `tls`: the certificate and key both ports serve TLS with (REST over HTTPS, HTTP/1.1 and HTTP/2; gRPC over
    TLS), paths as nginx sees them; None: plain HTTP/1.1 and h2c. `dhparam`: the DH group file of the DHE
    ciphers (RFC 7919 ffdhe2048, ops/ffdhe2048.pem; in the images /app/ops/ffdhe2048.pem).
    `max_body_bytes` is the replicas' max_request_size (config.properties), enforced at the door.
    The door listens on host:port (REST) and host:grpc_port (gRPC): its stream layer, which caps connections
    per address and hands each to the HTTP layer on a unix socket in `shared_folder`, a folder every nginx
    worker can reach, which also holds /health's cache (None: the followed prefix, else CONTAINER_PREFIX).
    `stream_module` is the dynamic module nginx loads for that layer (None: built in).
    `web_root` is where it finds the try-it page's files (in a container: where its image put them).
    Sequences are kept as tuples.
    """

    replicas: tuple[Replica, ...] | None
    models: tuple[str, ...]
    client_keys: tuple[ClientKey, ...]
    upstream_key_file: str | None
    max_body_bytes: int
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    limits: Limits = LIMITS
    web_root: Path = WEB_ROOT
    followed: Path | None = None
    shared_folder: Path | None = None
    stream_module: str | None = DEBIAN_STREAM_MODULE
    capacity: Capacity = CAPACITY
    js_module: str | None = DEBIAN_JS_MODULE
    worker_user: str | None = None
    tls: TlsFiles | None = None
    dhparam: str = str(DHPARAM)
    # Where nginx sends one syslog datagram per answer for ops/door_metrics.py to count (a path as nginx sees it);
    # None: no exporter reads them, and nothing is sent.
    telemetry_socket: Path | None = None
    # True (containers): nginx writes no log file; its log lines go to a socket beside the telemetry socket
    # (door_logs.LOG_SOCKET), and the process reading both prints them on its stdout as JSON objects.
    stdout_logs: bool = False
    upstream_key: InitVar[None] = None

    def __post_init__(self, upstream_key: None) -> None:
        if upstream_key is not None:
            raise ValueError("the door no longer holds TorchServe's key: give its key file (upstream_key_file)")
        if self.upstream_key_file is not None and not CONFIG_PATH.fullmatch(str(self.upstream_key_file)):
            raise ValueError(f"TorchServe's key file is an absolute path without quotes or $: {self.upstream_key_file}")
        tls_paths = [self.tls.cert, self.tls.key, self.dhparam] if self.tls else []
        if any(not CONFIG_PATH.fullmatch(str(path)) for path in tls_paths):
            raise ValueError(f"TLS files are absolute paths without quotes or $: {tls_paths}")
        if self.worker_user is not None and not re.fullmatch(r"[A-Za-z0-9._-]+ [A-Za-z0-9._-]+", self.worker_user):
            raise ValueError(f"worker_user is 'user group', got {self.worker_user!r}")
        if self.replicas is not None:
            object.__setattr__(self, "replicas", tuple(self.replicas))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "client_keys", tuple(checked_client_keys(self.client_keys)))
        if self.replicas == () or not self.models or not self.client_keys:
            raise ValueError("a door needs at least one replica, one model and one client key")
        if self.replicas is None and self.followed is None:
            raise ValueError("a followed door (replicas=None) needs the prefix its sockets live under")
        if self.stdout_logs and self.telemetry_socket is None:
            raise ValueError("a door logging to stdout sends its lines beside its telemetry socket: name it")

    @property
    def shared(self) -> Path:
        """The folder every worker reaches (as nginx sees its path): the layers' unix sockets, /health's cache."""
        return self.shared_folder or self.followed or CONTAINER_PREFIX


@dataclass(frozen=True)
class Door:
    """A door on this machine as `start` was given it, saved beside its config (settings.json) so that
    reload renders the same door; its keys are read from their files at each rendering (`settings`)."""

    host: str
    port: int
    grpc_port: int
    replicas: list[Replica]
    models: list[str]
    torchserve_key_file: str | None  # TorchServe's key_file.json; None when its token auth is off
    client_key_file: str
    max_body_bytes: int
    limits: Limits = LIMITS
    # TLS on both ports: the certificate and key served, and the local CA's certificate when the door made them
    # (ops/door_tls.py); None: plain.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_live: bool = False
    # host:port where the door's exporter serves /metrics (ops/door_metrics.py, started with nginx); None: none.
    metrics: str | None = None

    @property
    def tls(self) -> TlsFiles | None:
        if not (self.tls_cert and self.tls_key):
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca, self.tls_live)

    def settings(
        self,
        web_root: Path = WEB_ROOT,
        shared_folder: Path | None = None,
        stream_module: str | None = DEBIAN_STREAM_MODULE,
        js_module: str | None = DEBIAN_JS_MODULE,
        worker_user: str | None = None,
    ) -> DoorSettings:
        """This door with the client keys its key file holds now (a rotation changes them, nothing else), serving
        the page from `web_root`, its workers sharing `shared_folder`, with this machine's `stream_module` and
        `js_module`, its workers run as `worker_user`. TorchServe's key is read by nginx, per request."""
        key_file = str(Path(self.torchserve_key_file).resolve()) if self.torchserve_key_file else None
        return DoorSettings(
            replicas=tuple(self.replicas),
            models=tuple(self.models),
            client_keys=tuple(read_client_keys(Path(self.client_key_file))),
            upstream_key_file=key_file,
            max_body_bytes=self.max_body_bytes,
            host=self.host,
            port=self.port,
            grpc_port=self.grpc_port,
            limits=self.limits,
            web_root=web_root,
            shared_folder=shared_folder,
            stream_module=stream_module,
            js_module=js_module,
            worker_user=worker_user,
            tls=self.tls,
            telemetry_socket=shared_folder / TELEMETRY_SOCKET if self.metrics and shared_folder else None,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Door:
        data = json.loads(text)
        limits = Limits(**{**data["limits"], "trusted_proxies": tuple(data["limits"].get("trusted_proxies", ()))})
        return cls(**{**data, "replicas": [Replica(**r) for r in data["replicas"]], "limits": limits})
