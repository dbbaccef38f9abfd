"""The door: nginx in front of TorchServe, from the one template ops/nginx.conf.template.

    python -m ops.door start  [--host 127.0.0.1] [--port 8090] [--grpc-port 7090] [--tls]   (make door [TLS=1])
    python -m ops.door reload     # re-read the client keys and the TLS certificate, no restart (make door-reload)
    python -m ops.door stop       # (make door-stop)
    python -m ops.door render     # print the config that start would run (client keys are in keys.conf)
    python -m ops.door key        # the newest client key, for curl

The door also serves the try-it page (web/) at / without a key; start prints its link, with the key
in the URL fragment, which the browser keeps and never sends.

Everything nginx writes (the rendered config, keys, pid, logs, temp files) lives in one runtime
directory, `.door/` by default, and nginx runs with that directory as its prefix; the unix sockets between its
two layers (a stream layer that caps connections per address, then the HTTP layer) and /health's cache live in
a folder every nginx worker can reach (door_nginx.shared_folder).

Client keys: $DIGITLAB_API_KEY and every line of the key file (`.door/api_keys`) are accepted, so
a key is rotated by adding the new one, `make door-reload`, and deleting the old one later. When
neither exists, start writes the key file (mode 0600) with one fresh random key.

TLS (`--tls`, `make door TLS=1`): both ports speak TLS with the certificate in $DIGITLAB_TLS_CERT and its key in
$DIGITLAB_TLS_KEY, else with a certificate for this machine from a local CA that start makes on first use
(`.door/tls/ca.pem`: what clients trust; ops/door_tls.py). `make door-reload` serves a replaced certificate.

TorchServe's inference key is read by nginx from TorchServe's key_file.json for every request it sends upstream
(ops/torchserve_key.js, njs): a renewal (`make rotate-keys`, or the supervisor's before the keys expire) needs no
reload and fails no request. Such a door registers with that instance (`instance.register_door`): the supervisor
caps the door's logs (`instance.cap_logs`) and checks after a renewal that the door still runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from digitlab.keyfiles import API_KEY_ENV, CLIENT_KEY_FILE
from ops import instance
from ops.door_keys import (
    MIN_CLIENT_KEY_LENGTH,
    ClientKey,
    checked_key,
    client_key,
    ensure_client_key,
    key_id,
    read_client_keys,
    torchserve_key,
)
from ops.door_metrics import METRICS_PORT
from ops.door_nginx import (
    INSTALL_HINT,
    JS_HINT,
    RUNTIME,
    SETTINGS,
    STREAM_HINT,
    key_file_owner,
    local_settings,
    master_pid,
    missing_nginx,
    nginx,
    nginx_binary,
    nginx_command,
    reload,
    start,
    stop,
    write_private,
)
from ops.door_render import (
    CONFIG,
    FOLLOW_CONFIG,
    FOLLOWED_DIR,
    KEYS_INCLUDE,
    NO_SERVER,
    PID,
    TIMEOUT_MESSAGE,
    UNAVAILABLE_MESSAGE,
    UPSTREAM_KINDS,
    answers,
    followed_sockets,
    internal_sockets,
    render,
    render_follow,
    upstream_includes,
)
from ops.door_settings import (
    CAPACITY,
    CONTAINER_DHPARAM,
    CONTAINER_PREFIX,
    CONTAINER_WEB_ROOT,
    DEBIAN_JS_MODULE,
    DEBIAN_STREAM_MODULE,
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LIMIT_FIELDS,
    LIMITS,
    LIMITS_SWITCH_ENV,
    TELEMETRY_SOCKET,
    TORCHSERVE_KEY_SCRIPT,
    TRUSTED_PROXIES_ENV,
    WEB_ROOT,
    Capacity,
    Door,
    DoorSettings,
    Limits,
    Replica,
    host_port,
    limit_env,
    replica,
)
from ops.door_tls import (
    CA_CERT,
    CERT_ENV,
    DHPARAM,
    KEY_ENV,
    NAMES_ENV,
    SERVER,
    TLS_DIR,
    TlsFiles,
    certificate_names,
    door_certificates,
    user_certificates,
)
from ops.instance import READY_PATH, ROOT

# The door's face: what its users (ops.follow, deploy/, benchmarks/, the tests) import from `ops.door`. Its
# rooms: door_settings (typed settings and limits), door_keys (client and TorchServe keys), door_render (the
# templates into nginx.conf, keys.conf, follow.conf) and door_nginx (the process: start, reload, stop).
__all__ = [
    "API_KEY_ENV",
    "TELEMETRY_SOCKET",
    "CAPACITY",
    "CERT_ENV",
    "CLIENT_KEY_FILE",
    "CONFIG",
    "CONTAINER_DHPARAM",
    "CONTAINER_PREFIX",
    "CONTAINER_WEB_ROOT",
    "DEBIAN_JS_MODULE",
    "DEBIAN_STREAM_MODULE",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DHPARAM",
    "FOLLOWED_DIR",
    "FOLLOW_CONFIG",
    "INSTALL_HINT",
    "KEY_ENV",
    "JS_HINT",
    "KEYS_INCLUDE",
    "LIMITS",
    "LIMITS_SWITCH_ENV",
    "LIMIT_FIELDS",
    "MIN_CLIENT_KEY_LENGTH",
    "NAMES_ENV",
    "NO_SERVER",
    "PID",
    "READY_PATH",
    "ROOT",
    "RUNTIME",
    "SETTINGS",
    "STREAM_HINT",
    "TIMEOUT_MESSAGE",
    "TLS_DIR",
    "TORCHSERVE_KEY_SCRIPT",
    "TRUSTED_PROXIES_ENV",
    "UNAVAILABLE_MESSAGE",
    "UPSTREAM_KINDS",
    "WEB_ROOT",
    "Capacity",
    "ClientKey",
    "Door",
    "DoorSettings",
    "Limits",
    "Replica",
    "TlsFiles",
    "add_client_key_file_option",
    "answers",
    "checked_key",
    "client_key",
    "door_tls_files",
    "ensure_client_key",
    "followed_sockets",
    "host_port",
    "key_file_owner",
    "key_id",
    "internal_sockets",
    "limit_env",
    "local_door",
    "local_settings",
    "main",
    "master_pid",
    "missing_nginx",
    "nginx",
    "nginx_binary",
    "nginx_command",
    "page_link",
    "print_endpoints",
    "read_client_keys",
    "reload",
    "render",
    "render_follow",
    "replica",
    "start",
    "stop",
    "torchserve_key",
    "upstream_includes",
    "write_private",
]


def add_client_key_file_option(p: argparse.ArgumentParser) -> None:
    """--key-file as the deployments (compose, Kubernetes) read it: the door's client keys."""
    p.add_argument(
        "--key-file",
        type=Path,
        default=RUNTIME / CLIENT_KEY_FILE,
        help=f"client keys, one per line (with or instead of ${API_KEY_ENV})",
    )


def local_door(
    *,
    host: str,
    port: int,
    grpc_port: int,
    config: Path,
    torchserve_workdir: Path,
    key_file: Path,
    models: Sequence[str] | None = None,
    tls: TlsFiles | None = None,
    metrics: str | None = None,
) -> Door:
    """The door of `make door`: in front of the one TorchServe that `config` describes, sending the key that
    TorchServe wrote into `torchserve_workdir` (none there: none sent), for `models` (default: the archives
    in model_store/), with the limits of the environment, over TLS with `tls`' certificate (None: plain)."""
    props = instance.read_properties(config)
    ts_keys = instance.key_file(torchserve_workdir)
    return Door(
        host=host,
        port=port,
        grpc_port=grpc_port,
        replicas=[replica(instance.endpoints(props))],
        models=list(models or instance.archives()),
        torchserve_key_file=str(ts_keys) if ts_keys.is_file() else None,
        client_key_file=str(key_file),
        max_body_bytes=int(props["max_request_size"]),
        limits=Limits.from_env(),
        tls_cert=tls.cert if tls else None,
        tls_key=tls.key if tls else None,
        tls_ca=tls.ca if tls else None,
        tls_live=tls.live if tls else False,
        metrics=metrics,
    )


def door_tls_files(runtime: Path, make: bool = True) -> TlsFiles:
    """The certificate a `--tls` door serves: the user's ($DIGITLAB_TLS_CERT/KEY), else the local CA's in
    RUNTIME/tls, made when missing (`make`; else only named, for `render`)."""
    folder = runtime.resolve() / TLS_DIR
    if not make:
        given = user_certificates()
        return given or TlsFiles(str(folder / SERVER), str(folder / SERVER), str(folder / CA_CERT), live=True)
    files, made = door_certificates(folder)
    if made:
        print(f"made a local CA and a certificate for {', '.join(sorted(certificate_names(Path(files.cert))))}")
    return files


def page_link(url: str, key: str) -> str:
    """The try-it page with `key` in the URL fragment (web/app.js reads it from there)."""
    return f"{url}/#key={key}"


def print_endpoints(door: Door, pid: int) -> None:
    print(f"door up (nginx pid {pid}) for models: {', '.join(door.models)}")
    rest = f"{'https' if door.tls else 'http'}://{door.host}:{door.port}"
    grpc = f"grpcs://{door.host}:{door.grpc_port}" if door.tls else f"{door.host}:{door.grpc_port}"
    # The key rides in the fragment, which the browser never sends: the page reads it and keeps it for the tab.
    print(f"  page    {page_link(rest, client_key(Path(door.client_key_file)))}")
    print(f"  REST    {rest}/predictions/<model>   health: {rest}/health")
    print(f"  gRPC    {grpc} (StreamPredictions only)")
    print(f"  key     Authorization: Bearer $(.venv/bin/python -m ops.door key)   [{door.client_key_file}]")
    if door.tls and door.tls_ca:
        print(f"  TLS     CA {door.tls_ca}: clients on this machine find it; elsewhere give it (--ca, $DIGITLAB_CA,")
        print(f"          curl --cacert {door.tls_ca})")
    elif door.tls:
        print(f"  TLS     certificate {door.tls_cert} (${CERT_ENV}); clients trust its CA")
    if door.torchserve_key_file is None:
        print("  note    no TorchServe key file: nothing is sent upstream (TorchServe must run without token auth)")
    print("  reload  make door-reload (after changing keys or your certificate); stop: make door-stop")


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
    p.add_argument(
        "--tls",
        action="store_true",
        help=f"both ports over TLS: ${CERT_ENV} and ${KEY_ENV}, else a local CA's certificate (RUNTIME/tls/)",
    )
    p.add_argument(
        "--metrics",
        default=f"127.0.0.1:{METRICS_PORT}",
        help="host:port of the door's Prometheus /metrics (ops/door_metrics.py); 'off' for none",
    )
    p.add_argument(
        "--key-renewed",
        action="store_true",
        help="reload: TorchServe renewed its key (the supervisor's call): only a door holding the key reloads",
    )
    args = p.parse_args(argv)
    key_file = args.key_file or args.runtime / CLIENT_KEY_FILE
    try:
        if args.action in ("start", "render"):
            door = local_door(
                host=args.host,
                port=args.port,
                grpc_port=args.grpc_port,
                config=args.config,
                torchserve_workdir=args.torchserve_workdir,
                key_file=key_file,
                models=args.models,
                tls=door_tls_files(args.runtime, make=args.action == "start") if args.tls else None,
                metrics=None if args.metrics == "off" else args.metrics,
            )
            if args.action == "start":
                print_endpoints(door, start(args.runtime, door))
            else:
                print(render(local_settings(args.runtime, door, prepare=False))[0])
        elif args.action == "stop":
            print("door stopped" if stop(args.runtime) else "door was not running")
        elif args.action == "reload":
            accepted = reload(args.runtime, key_renewed=args.key_renewed)
            print(f"door reloaded: {accepted} client key(s) accepted")
        else:
            print(client_key(key_file))
    except (RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
