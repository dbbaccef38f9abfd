"""The door's nginx configs, from its templates: nginx.conf and keys.conf (`render`), and for a followed
door the second layer (`render_follow`) and its server lists (`upstream_includes`). Text only: writing
the files and running nginx is door_nginx's.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict
from pathlib import Path

from digitlab.errors import error_json
from ops import door_logs
from ops.door_keys import keys_include
from ops.door_settings import (
    LIMITS_SWITCH_ENV,
    TORCHSERVE_KEY_SCRIPT,
    TRUSTED_PROXIES_ENV,
    DoorSettings,
    Limits,
    Replica,
)
from ops.instance import READY_PATH

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
FOLLOW_TEMPLATE = Path(__file__).resolve().parent / "nginx.follow.conf.template"
# The files under the door's prefix that the rendered configs name (the template's `pid` and `include`).
CONFIG, KEYS_INCLUDE, PID = "nginx.conf", "keys.conf", "nginx.pid"
FOLLOW_CONFIG = "follow.conf"  # a followed door's second nginx, beside nginx.conf (ops/follow.py runs both)
FOLLOWED_DIR = "upstreams"  # under the door's prefix: the followed layer's server lists and unix sockets
PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")
# What the door answers itself when no replica can (both nginx layers of a followed door say the same).
UNAVAILABLE_MESSAGE = "no model server is answering; retry later"
TIMEOUT_MESSAGE = "the model server did not answer in time"
UPSTREAM_KINDS = ("rest", "grpc", "ready")  # a Replica's fields, one upstream each
NO_SERVER = "127.0.0.1:9"  # the placeholder of an upstream with no replica ready (marked down, never tried)

# The per-client limit directives of a prediction route; with limits off, a comment saying so instead.
REST_LIMITS = """# nodelay: a burst within budget is served at once, not paced; beyond it, 429 at once.
            limit_req zone=requests burst={{ burst }} nodelay;
            limit_req zone=heavy_requests burst={{ heavy_burst }} nodelay;
            limit_conn in_flight {{ in_flight }};
            limit_conn heavy_in_flight {{ heavy_in_flight }};"""
GRPC_LIMITS = """limit_req zone=requests burst={{ burst }} nodelay;
            limit_conn grpc_in_flight {{ grpc_in_flight }};
            limit_conn heavy_in_flight {{ heavy_in_flight }};"""
LIMITS_OFF = f"# no per-client limits: {LIMITS_SWITCH_ENV}=off (a limiter in front of the door does it)"
# The budget for what the door answers itself. Its refusals are not an error line each: info is below the error
# log's warn, and the access log keeps one in 256 of them.
LOCAL_LIMITS = """limit_req zone=local burst={{ local_burst }} nodelay;
            limit_req_log_level info;"""
STREAM_LIMITS = "limit_conn connections {{ connections }};"
STREAM_LIMITS_OFF = f"# no cap per address: {LIMITS_SWITCH_ENV}=off"
# The HTTP layer's sockets, where the stream layer hands each connection over (in door_settings.DoorSettings.shared):
# the plain ones, and for connections from a trusted proxy (whose X-Forwarded-For names the client) their own.
INTERNAL_KINDS = ("rest", "grpc", "rest-proxied", "grpc-proxied")
HEALTH_CACHE = "health-cache"  # /health's last answer, beside them
# The body the door answers a refusal with is the product's one error body (digitlab.errors.error_json: the same
# fields in the same order, compact JSON, one line), rendered into the config, never typed in the template.
MALFORMED = (
    "malformed request: the door refuses NUL bytes and paths that climb above /, targets that are not a path, "
    "duplicate Host or Content-Length headers, folded header lines and whatever else HTTP/1.1 does not allow"
)


# The request's id as the door knows it ($door_request_id: the client's X-Request-Id when it is 1-128 characters
# of A-Z a-z 0-9 . _ -, else nginx's own $request_id), which nginx fills into every body it answers itself.
REQUEST_ID_VARIABLE = "$door_request_id"


def quoted_body(status: int, kind: str, message: str) -> str:
    """An error body as the inside of a single-quoted nginx string (`return 404 '...'`), its request_id the
    request's own (nginx fills the variable in; the id's characters need no JSON escaping)."""
    if "$" in message:  # nginx would read a variable there, and has no escape for it
        raise ValueError(f"a door message may not hold '$': {message!r}")
    body = error_json(status, kind, message, REQUEST_ID_VARIABLE)
    return body.replace("\\", "\\\\").replace("'", "\\'")


def answers(door: DoorSettings) -> dict[str, str]:
    """{template field: quoted body} of every REST answer the door gives itself (and the followed layer's two)."""
    limits = door.limits
    kib = door.max_body_bytes // 1024
    table = {
        "bad_request": (400, "BadRequest", MALFORMED),
        "unauthorized": (401, "Unauthorized", "missing or wrong API key: send the header Authorization: Bearer <key>"),
        "not_found": (
            404,
            "NotFound",
            "no such route: this door serves POST /predictions/<model>, GET /health and the try-it page at GET /",
        ),
        "too_large": (413, "RequestTooLarge", f"request body over {kib} KiB; the largest valid request is a few KB"),
        "uri_too_long": (414, "URITooLong", "request line over 8 KB: the door serves short paths only"),
        "too_many": (
            429,
            "TooManyRequests",
            f"this key is over its limit of {limits.rate} predictions/s ({limits.heavy_rate}/s for sample and "
            f"interpolate) or {limits.in_flight} at once ({limits.heavy_in_flight} of sample, interpolate and gRPC "
            "calls); retry after a second",
        ),
        "too_many_local": (
            429,
            "TooManyRequests",
            f"this client is over its limit of {limits.local_rate} requests/s that the door answers itself "
            "(no key, no such route, a malformed request, the try-it page); retry after a second",
        ),
        "headers_too_large": (431, "HeadersTooLarge", "a request header over 8 KB, or over 32 KB of headers"),
        "use_https": (
            400,
            "BadRequest",
            "plain HTTP sent to the door's TLS port: use https:// (gRPC: grpcs://, TLS) and the door's CA",
        ),
        "unavailable": (503, "Unavailable", UNAVAILABLE_MESSAGE),
        "timeout": (504, "Timeout", TIMEOUT_MESSAGE),
        "version_not_supported": (
            505,
            "VersionNotSupported",
            "this port speaks HTTP/1.0 and HTTP/1.1; gRPC (HTTP/2) has a port of its own",
        ),
    }
    return {field: quoted_body(*answer) for field, answer in table.items()}


# How a prediction is passed to TorchServe, the same in its first try (@predict) and its retry with TorchServe's key
# read anew (@retry_current_key).
REST_PROXY = """# The route as matched (decoded, dot segments resolved), not the client's raw URI or query.
            proxy_pass http://torchserve_rest/predictions/$model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $door_client_addr;
            # Chunked NDJSON frames of {"stream": true} go to the client one by one, as TorchServe sends them.
            proxy_buffering off;
            # Predictions are pure functions of the request: a replica that refuses or resets the connection, or
            # answers 502/503/504 (a queue full, a replica stopping) before sending anything is safely retried
            # once on another one; so is its 404, which on these routes only means the model is not registered
            # there yet (a TorchServe listens before its models load). An answer that has begun, a stream's
            # first frame included, is never retried.
            proxy_next_upstream error http_404 http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            # Per read, not per answer: the wait for the first byte (queue + work), then between frames,
            # so a stream of any length passes while frames keep coming. Above every model's own
            # responseTimeout (10-60 s), which answers first.
            proxy_read_timeout {{ read_timeout }};"""


def internal_sockets(folder: Path) -> dict[str, Path]:
    """{kind: the unix socket where the door's HTTP layer takes that kind of connection from its stream layer}."""
    return {kind: folder / f"door-{kind}.sock" for kind in INTERNAL_KINDS}


def stream_module(path: str | None) -> str:
    if path is None:
        return "# the stream module is built into this nginx"
    return f"load_module {path};"


# A REST prediction TorchServe answers 400: asked again once, with its key read anew (ops/torchserve_key.js).
KEY_RETRY = """# TorchServe refuses a key it has just renewed with 400 (InvalidKeyException), possibly before the
            # door read the new one: a 400 is asked again once, with the key read anew, and whatever that second
            # answer is (the handler's own 400 included) goes to the client unchanged. Only 400 is intercepted
            # among TorchServe's answers.
            proxy_intercept_errors on;
            error_page 400 = @retry_current_key;"""
RETRY_WAIT = """# TorchServe's own refusal while its key file still holds the refused key: wait for the file (a timer,
            # 20 ms steps, at most 1 s), then ask again; a handler's 400 is asked again at once (torchserve_key.js).
            js_content torchserve_key.retry;"""


def js_module(door: DoorSettings) -> str:
    if door.upstream_key_file is None:
        return "# no njs: no TorchServe key to read (its replicas run without token authorization)"
    if door.js_module is None:
        return "# the njs module is built into this nginx"
    return f"load_module {door.js_module};"


def worker_user(door: DoorSettings) -> str:
    if door.worker_user is None:
        return "# the workers run as nginx's default user (started as root: nobody)"
    reason = "# started as root: the workers run as the owner of TorchServe's key file (0600), which they read"
    return f"{reason}\nuser {door.worker_user};"


def torchserve_key(door: DoorSettings) -> dict[str, str]:
    """The http block's lines that read TorchServe's key, and the Authorization value of a first try and a retry."""
    if door.upstream_key_file is None:
        return {
            "torchserve_key": "# none: the replicas run without token authorization, no Authorization is sent upstream",
            "upstream_authorization": '""',
            "upstream_authorization_retry": '""',
            "key_retry": "# no TorchServe key: every 400 is the handler's, passed on as it is",
            "retry_wait": "# never reached without TorchServe's key (nothing is intercepted)\n            return 404;",
        }
    lines = (
        f'js_import torchserve_key from "{TORCHSERVE_KEY_SCRIPT}";\n'
        f'    js_var $torchserve_key_file "{door.upstream_key_file}";\n'
        "    js_set $torchserve_authorization torchserve_key.authorization;\n"
        "    js_var $torchserve_authorization_retry;"
    )
    return {
        "torchserve_key": lines,
        "upstream_authorization": "$torchserve_authorization",
        "upstream_authorization_retry": "$torchserve_authorization_retry",
        "key_retry": KEY_RETRY,
        "retry_wait": RETRY_WAIT,
    }


# Mozilla's "intermediate" server-side TLS profile for nginx (https://ssl-config.mozilla.org/#server=nginx&config=
# intermediate, guidelines 5.7; https://wiki.mozilla.org/Security/Server_Side_TLS): TLS 1.2 and 1.3 only, forward-
# secret AEAD ciphers, the client's choice among them, RFC 7919's ffdhe2048 for DHE, a shared session cache.
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
# A certificate read at every new TLS connection (TlsFiles.live): a variable in its path makes nginx load the file
# per handshake instead of once at start; this one is always empty.
LIVE_CERTIFICATE = """# The certificate and key are read at every new TLS connection (the empty variable in the path
    # says so): one replaced on disk is served from the next handshake on, no reload (door_tls.TlsFiles.live).
    map $ssl_server_name $door_tls_reread {
        default "";
    }
    """
TLS_SETTINGS = """# Both ports speak TLS, ended here in the HTTP layer (the stream layer in front counted the connection
    # per address before its first byte, the handshake included, and passed the bytes on as they came). Mozilla's
    # "intermediate" profile (https://ssl-config.mozilla.org/#server=nginx&config=intermediate, guidelines 5.7).
    ssl_certificate "{cert}";
    ssl_certificate_key "{key}";
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_ciphers {ciphers};
    ssl_prefer_server_ciphers off;
    ssl_dhparam "{dhparam}";
    # Session resumption: a returning client skips the full handshake (one cache for both ports and every worker,
    # ~40,000 sessions, a day). Tickets off, as the profile says: their keys would live as long as nginx runs.
    ssl_session_cache shared:door_tls:10m;
    ssl_session_timeout 1d;
    ssl_session_tickets off;"""
NO_TLS = "# no TLS: plain HTTP/1.1 and h2c (make door TLS=1, or TLS in front of the door)"
HSTS = 'add_header Strict-Transport-Security "max-age=63072000" always;'
# The door's answer to plain HTTP on a TLS port (nginx's 497), REST and gRPC alike.
TLS_PAGES = "error_page 497 /_door/use_https;"


def tls_values(door: DoorSettings) -> dict[str, str]:
    """The template's TLS fields: nginx's TLS settings, HSTS on every HTTPS answer (server-wide, and again in each
    location that adds headers of its own, which would drop the server's), the refusal of plain HTTP."""
    if door.tls is None:
        return {"tls": NO_TLS, "server_hsts": "# no HSTS: plain HTTP", "hsts": "", "tls_pages": ""}
    reread = "$door_tls_reread" if door.tls.live else ""
    paths = {"cert": door.tls.cert + reread, "key": door.tls.key + reread, "dhparam": door.dhparam}
    settings = (LIVE_CERTIFICATE if door.tls.live else "") + TLS_SETTINGS.format(
        **paths, ciphers=MOZILLA_INTERMEDIATE_CIPHERS
    )
    hsts_comment = "# HSTS (two years, as the profile says) on every HTTPS answer"
    return {
        "tls": settings,
        "server_hsts": f"{hsts_comment}\n        {HSTS}",
        "hsts": f"\n            {HSTS}",
        "tls_pages": f"\n        {TLS_PAGES}",
    }


def trusted_networks(proxies: tuple[str, ...]) -> list[str]:
    return [str(ipaddress.ip_network(p, strict=False)) for p in proxies]


def stream_clients(limits: Limits, sockets: dict[str, Path]) -> tuple[str, dict[str, str]]:
    """The stream layer's idea of a client ($door_peer, the key of the per-address cap) and where each kind of
    connection goes; -> (its config lines, {"rest_target": ..., "grpc_target": ...})."""
    if not limits.trusted_proxies:
        lines = (
            f"# the client is the connection's source address ({TRUSTED_PROXIES_ENV} names proxies to trust)\n"
            "    map $binary_remote_addr $door_peer {\n        default $binary_remote_addr;\n    }"
        )
        return lines, {f"{kind}_target": f"unix:{sockets[kind]}" for kind in ("rest", "grpc")}
    trusted = "".join(f"\n        {network} 1;" for network in trusted_networks(limits.trusted_proxies))
    lines = [
        f"geo $door_trusted_proxy {{\n        default 0;{trusted}\n    }}",
        'map $door_trusted_proxy $door_peer {\n        1 "";\n        default $binary_remote_addr;\n    }',
    ]
    for kind in ("rest", "grpc"):
        lines.append(
            f"map $door_trusted_proxy $door_{kind}_socket {{\n        1 unix:{sockets[f'{kind}-proxied']};\n"
            f"        default unix:{sockets[kind]};\n    }}"
        )
    return "\n    ".join(lines), {f"{kind}_target": f"$door_{kind}_socket" for kind in ("rest", "grpc")}


def server_entries(limits: Limits, sockets: dict[str, Path], kind: str, tls: bool = False) -> list[str]:
    """The first lines of the HTTP layer's server(s) of `kind`: the socket it listens on and where it takes the
    client's address from. With trusted proxies, a second server for their connections, which believes their
    X-Forwarded-For (read from the right, trusted hops skipped); everyone else's is never read. With `tls` the
    socket speaks TLS (the stream layer passes the client's bytes as they are): REST offers HTTP/2 and HTTP/1.1
    (ALPN), gRPC HTTP/2."""
    http2 = " ssl http2" if tls else " http2" if kind == "grpc" else ""
    entries = [
        f"listen unix:{sockets[kind]} proxy_protocol{http2};\n"
        "        # the client's address, from the stream layer\n"
        "        set_real_ip_from unix:;\n        real_ip_header proxy_protocol;"
    ]
    if limits.trusted_proxies:
        trusted = "".join(f"\n        set_real_ip_from {n};" for n in trusted_networks(limits.trusted_proxies))
        entries.append(
            f"listen unix:{sockets[f'{kind}-proxied']} proxy_protocol{http2};\n"
            f"        # connections from a trusted proxy ({TRUSTED_PROXIES_ENV}): the client is in X-Forwarded-For\n"
            f"        set_real_ip_from unix:;{trusted}\n        real_ip_header X-Forwarded-For;\n"
            "        real_ip_recursive on;"
        )
    return entries


SERVER_BLOCK = re.compile(r"^    server \{\n        \{\{ (rest|grpc)_entry \}\}\n.*?^    \}\n", re.M | re.S)


def one_server_per_entry(template: str, entries: dict[str, list[str]]) -> str:
    """The template's REST and gRPC server blocks, each written once per entry (server_entries)."""

    def expand(block: re.Match) -> str:
        field = f"{{{{ {block.group(1)}_entry }}}}"
        return "\n".join(block.group(0).replace(field, entry) for entry in entries[block.group(1)])

    return SERVER_BLOCK.sub(expand, template)


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


def render_follow(door: DoorSettings) -> str:
    """follow.conf of a followed door (replicas None): the layer that balances over the ready replicas (its
    template says why), taking requests on unix sockets under `door.followed`."""
    if door.replicas is not None or door.followed is None:
        raise ValueError("only a followed door (replicas=None, followed=its prefix) has a second layer")
    sockets = followed_sockets(door.followed)
    bodies = answers(door)
    return fill(
        FOLLOW_TEMPLATE.read_text(),
        {
            "workers": door.capacity.workers,
            "worker_connections": door.capacity.worker_connections,
            "worker_rlimit_nofile": door.capacity.worker_rlimit_nofile,
            "unavailable": bodies["unavailable"],
            "timeout": bodies["timeout"],
            "followed_dir": FOLLOWED_DIR,
            "rest_socket": sockets["rest"],
            "grpc_socket": sockets["grpc"],
            "ready_socket": sockets["ready"],
            "read_timeout": f"{door.limits.read_timeout_s}s",
            "max_body_bytes": door.max_body_bytes,
            "unavailable_message": UNAVAILABLE_MESSAGE,
            "timeout_message": TIMEOUT_MESSAGE,
            "error_log": log_destinations(door)["layer_error_log"],
        },
    )


def upstream_includes(replicas: list[Replica]) -> dict[str, str]:
    """{file under FOLLOWED_DIR: its server lines} for a followed door (ops/follow.py writes them)."""
    return {f"{kind}.conf": server_lines([getattr(r, kind) for r in replicas]) + "\n" for kind in UPSTREAM_KINDS}


def log_destinations(door: DoorSettings) -> dict[str, str]:
    """Where `door` logs: files under logs/, or (stdout_logs: containers) the log socket beside its telemetry
    socket (ops/door_logs.py)."""
    return door_logs.destinations(door.telemetry_socket.with_name(door_logs.LOG_SOCKET) if door.stdout_logs else None)


def render(door: DoorSettings) -> tuple[str, str]:
    """(nginx.conf, keys.conf) of `door` (DoorSettings says what each of its fields is).

    With several replicas, nginx balances round robin, skips a replica that fails 3 times in 10 s for 10 s
    (passive health check), and retries a prediction once on another replica when the first refuses or
    resets the connection or answers 404/502/503/504 before sending anything (safe: predictions have no
    side effects). /health is ready while one replica's readiness check answers 200. A followed door
    (replicas None) sends everything to the second nginx's sockets, whose config is render_follow's.
    """
    if door.replicas is None:
        servers = {kind: f"        server unix:{sock};" for kind, sock in followed_sockets(door.followed).items()}
    else:
        servers = {kind: server_lines([getattr(r, kind) for r in door.replicas]) for kind in UPSTREAM_KINDS}
    limits = door.limits
    sockets = internal_sockets(door.shared)
    clients, targets = stream_clients(limits, sockets)
    values = {
        "metrics_log": (
            f"access_log {door_logs.syslog(door.telemetry_socket, 'door')} door_metrics;"
            if door.telemetry_socket
            else "# (no exporter reads this door's answers: nothing is counted)"
        ),
        **log_destinations(door),
        **asdict(limits),
        **asdict(door.capacity),
        **answers(door),
        **targets,
        **torchserve_key(door),
        **tls_values(door),
        "rest_proxy": REST_PROXY,
        "stream_module": stream_module(door.stream_module),
        "js_module": js_module(door),
        "worker_user": worker_user(door),
        "health_cache": door.shared / HEALTH_CACHE,
        "stream_clients": clients,
        "stream_limits": STREAM_LIMITS if limits.per_client else STREAM_LIMITS_OFF,
        "local_limits": LOCAL_LIMITS if limits.per_client else LIMITS_OFF,
        "read_timeout": f"{limits.read_timeout_s}s",
        "rest_limits": REST_LIMITS if limits.per_client else LIMITS_OFF,
        "grpc_limits": GRPC_LIMITS if limits.per_client else LIMITS_OFF,
        "listen_rest": f"{door.host}:{door.port}",
        "listen_grpc": f"{door.host}:{door.grpc_port}",
        "rest_servers": servers["rest"],
        "grpc_servers": servers["grpc"],
        "ready_servers": servers["ready"],
        "ready_path": READY_PATH,
        "web_root": door.web_root.resolve(),
        "models": "|".join(re.escape(m) for m in door.models),
        "max_body_bytes": door.max_body_bytes,
        "max_body_kib": door.max_body_bytes // 1024,
        "unavailable_message": UNAVAILABLE_MESSAGE,
        "timeout_message": TIMEOUT_MESSAGE,
    }
    entries = {kind: server_entries(limits, sockets, kind, door.tls is not None) for kind in ("rest", "grpc")}
    return fill(one_server_per_entry(TEMPLATE.read_text(), entries), values), keys_include(door.client_keys)
