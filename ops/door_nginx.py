"""The door's nginx process on this machine: the binary and its command line, and start, reload and stop.

Everything nginx writes (the rendered config, keys, pid, logs, temp files) lives in one runtime directory,
`.door/` by default, and nginx runs with that directory as its prefix; what every worker must reach (the unix
sockets between the door's stream and HTTP layers, /health's cache) lives in `shared_folder`. nginx needs its
stream module (`stream_module`: Debian's libnginx-mod-stream, or built in) and, in front of a TorchServe with
token authorization, its njs module (`js_module`: Debian's libnginx-mod-http-js), with which it reads TorchServe's
key per request. Such a door registers with that instance (`instance.register_door`): the supervisor caps the
door's logs (`instance.cap_logs`), and after renewing TorchServe's key runs the door's registered command, which
only checks that the door still runs (it reads the new key by itself; `reload(..., key_renewed=True)`).
"""

from __future__ import annotations

import functools
import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ops import instance
from ops.door_keys import ensure_client_key, read_client_keys
from ops.door_render import CONFIG, KEYS_INCLUDE, PID, internal_sockets, render
from ops.door_settings import TELEMETRY_SOCKET, WEB_ROOT, Door, DoorSettings
from ops.door_tls import local_certificates, server_names
from ops.instance import ROOT

EXPORTER_PID = "door_metrics.pid"  # the exporter started with nginx (ops/door_metrics.py)
EXPORTER_START_S = 10.0
RUNTIME = ROOT / ".door"
SETTINGS = "settings.json"  # the Door as start was given it, beside its config: reload renders it again
INSTALL_HINT = (
    "nginx not found: install it from the distribution "
    "(Debian/Ubuntu: apt-get install nginx-light libnginx-mod-stream libnginx-mod-http-js; "
    "Fedora: dnf install nginx nginx-mod-stream, and njs from nginx.org's packages; macOS: brew install nginx njs)"
)
STREAM_HINT = (
    "nginx has no stream module, which the door counts connections with: install it "
    "(Debian/Ubuntu: apt-get install libnginx-mod-stream; Fedora: dnf install nginx-mod-stream)"
)
JS_HINT = (
    "nginx has no njs module (ngx_http_js_module), with which the door reads TorchServe's key per request: install "
    "it (Debian/Ubuntu: apt-get install libnginx-mod-http-js; elsewhere nginx.org's nginx-module-njs)"
)
STOP_GRACE_S = 10.0


def nginx_binary() -> str | None:
    """nginx on PATH, or where distributions put it (/usr/sbin is not on every user's PATH)."""
    found = [p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)]
    return shutil.which("nginx") or next(iter(found), None)


@functools.cache
def stream_module(binary: str) -> tuple[bool, str | None]:
    """(whether `binary` can have the stream module, the dynamic module's file to load or None when it is built
    in), from its build options (`nginx -V`): Debian and Fedora build it as a module, Homebrew builds it in."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=30).stderr
    if re.search(r"--with-stream(?=\s|$)", built):
        return True, None
    if "--with-stream=dynamic" not in built:
        return False, None
    modules = re.search(r"--modules-path=(\S+)", built)
    folder = Path(modules.group(1)) if modules else Path(binary).resolve().parent.parent / "modules"
    module = folder / "ngx_stream_module.so"
    return module.is_file(), str(module)


@functools.cache
def js_module(binary: str) -> tuple[bool, str | None]:
    """(whether `binary` can have njs, the dynamic module's file to load or None when it is built in). njs is built
    apart from nginx: a static build names it in --add-module; Debian's libnginx-mod-http-js (and nginx.org's
    package) put ngx_http_js_module.so in the modules folder, which `nginx -V` does not list."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=30).stderr
    if re.search(r"--add-module=\S*njs\S*", built):
        return True, None
    modules = re.search(r"--modules-path=(\S+)", built)
    folder = Path(modules.group(1)) if modules else Path(binary).resolve().parent.parent / "modules"
    module = folder / "ngx_http_js_module.so"
    return module.is_file(), str(module)


def missing_nginx() -> str | None:
    """Why this machine cannot run a door (what to install), or None: nginx, its stream module, its njs module."""
    binary = nginx_binary()
    if binary is None:
        return INSTALL_HINT
    if not stream_module(binary)[0]:
        return STREAM_HINT
    return None if js_module(binary)[0] else JS_HINT


def local_stream_module() -> str | None:
    """The stream module this machine's nginx loads (None: built in); refuses when it has none."""
    binary = require_nginx()
    if not stream_module(binary)[0]:
        raise SystemExit(STREAM_HINT)
    return stream_module(binary)[1]


def local_js_module(door: Door) -> str | None:
    """The njs module this machine's nginx loads for `door` (None: built in, or not needed: no TorchServe key);
    refuses when the door reads TorchServe's key and nginx has no njs."""
    if not door.torchserve_key_file:
        return None
    found, module = js_module(require_nginx())
    if not found:
        raise SystemExit(JS_HINT)
    return module


def key_file_owner(key_file: str | Path | None) -> str | None:
    """The user and group ("user group") for nginx's workers when nginx starts as root and reads TorchServe's key:
    the key file's owner (the file is 0600). Otherwise None: a non-root nginx's workers are its own user, and
    without a key file the default (nobody) reads nothing private."""
    if os.geteuid() != 0 or not key_file:
        return None
    info = Path(key_file).stat()
    try:
        return f"{pwd.getpwuid(info.st_uid).pw_name} {grp.getgrgid(info.st_gid).gr_name}"
    except KeyError:
        raise RuntimeError(
            f"{key_file} belongs to uid {info.st_uid} / gid {info.st_gid} without a name here: nginx's `user` needs one"
        ) from None


def local_worker_user(door: Door) -> str | None:
    """Who nginx's workers run as when started as root: the owner of TorchServe's key file, which they read per
    request, else of the TLS key when they read it per connection (door_tls.TlsFiles.live); both 0600."""
    if door.torchserve_key_file:
        return key_file_owner(door.torchserve_key_file)
    return key_file_owner(door.tls_key) if door.tls_live else None


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


def runtime_digest(runtime: Path) -> str:
    """A short name for one runtime directory, for the folders of it that live in the system's temp directory."""
    return hashlib.sha256(str(runtime.resolve()).encode()).hexdigest()[:12]


def published_page_path(runtime: Path) -> Path:
    return Path(tempfile.gettempdir()) / f"digitlab-web-{runtime_digest(runtime)}"


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


def shared_folder_path(runtime: Path) -> Path:
    return Path(tempfile.gettempdir()) / f"digitlab-door-{runtime_digest(runtime)}"


def shared_folder(runtime: Path) -> Path:
    """The folder this door's workers share: where its stream layer hands connections to its HTTP layer (unix
    sockets) and /health's cache. A folder of its own that every nginx worker can reach (a root-started nginx
    runs its workers as nobody, who cannot traverse a private checkout), short enough for a socket's path
    (108 bytes), listed by no one but its owner."""
    folder = shared_folder_path(runtime)
    folder.mkdir(mode=0o711, exist_ok=True)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.geteuid():
        raise RuntimeError(f"{folder} exists and is not this user's own folder: remove it")
    folder.chmod(0o711)
    return folder


def local_settings(runtime: Path, door: Door, prepare: bool = True) -> DoorSettings:
    """`door` as this machine runs it from `runtime`: its page's copy, its socket folder, this nginx's stream and
    njs modules, its workers' user. `prepare`: make the page's copy and the folder (start and reload), else only
    name them (render)."""
    machine = {
        "stream_module": local_stream_module(),
        "js_module": local_js_module(door),
        "worker_user": local_worker_user(door),
    }
    if not prepare:
        return door.settings(published_page_path(runtime), shared_folder_path(runtime), **machine)
    return door.settings(published_page(runtime), shared_folder(runtime), **machine)


def install_config(runtime: Path, door: Door) -> None:
    """Render `door` into `runtime` and have nginx check it; the previous files come back if it fails."""
    for sub in ("logs", "tmp"):
        (runtime / sub).mkdir(parents=True, exist_ok=True)
    conf, keys = render(local_settings(runtime, door))
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
    for sock in internal_sockets(shared_folder(runtime)).values():
        sock.unlink(missing_ok=True)  # left by a killed nginx: it would not bind over them
    if door.metrics:
        start_exporter(runtime, door.metrics)
    started = nginx(runtime)
    if started.returncode != 0:
        raise RuntimeError(f"nginx did not start:\n{started.stderr.strip()}")
    pid = master_pid(runtime)
    if pid is None:
        raise RuntimeError(f"nginx exited at start; see {runtime / 'logs' / 'error.log'}")
    if door.torchserve_key_file:  # the supervisor runs this command when it renews TorchServe's keys
        prefix = runtime.resolve()
        reload_command = [sys.executable, "-m", "ops.door", "reload", "--key-renewed", "--runtime", str(prefix)]
        workdir = Path(door.torchserve_key_file).parent
        instance.register_door(workdir, reload_command, ROOT, prefix / "logs", prefix / PID)
    return pid


def reads_key_per_request(runtime: Path) -> bool:
    """Whether the door running from `runtime` reads TorchServe's key per request (its config, not a key, says
    where from): a renewal of that key needs no reload."""
    try:
        return "$torchserve_authorization" in (runtime / CONFIG).read_text()
    except FileNotFoundError:
        return False


def reload(runtime: Path = RUNTIME, key_renewed: bool = False) -> int:
    """Re-render (re-reading the client keys) and reload nginx: no restart, no dropped call.

    Returns the number of accepted client keys once the old worker has finished its requests and
    exited (at most STOP_GRACE_S), so that from then on every request meets the new keys. nginx reads the TLS
    certificate and key again (a replaced certificate is served from then on, no connection cut); a certificate
    the door made itself is made anew first when it expires within door_tls.RENEW_BEFORE_DAYS.
    `key_renewed` (the supervisor renewed TorchServe's key): a door that reads that key per request is left
    alone, for a reload closes its clients' idle keep-alive connections; only a door that held the key in its
    config (an older door) is reloaded. Either way it fails when the door is not running.
    """
    pid = master_pid(runtime)
    if pid is None:
        raise RuntimeError("the door is not running: make door first")
    door = Door.from_json((runtime / SETTINGS).read_text())
    if key_renewed and reads_key_per_request(runtime):
        return len(read_client_keys(Path(door.client_key_file)))
    if door.tls_ca:  # the door's own certificate: made anew when it expires soon or misses a name asked for
        local_certificates(Path(door.tls_ca).parent, server_names())
    install_config(runtime, door)
    old = workers(pid)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and (workers(pid) & old or not workers(pid)):
        time.sleep(0.05)
    return len(read_client_keys(Path(door.client_key_file)))


def start_exporter(runtime: Path, listen: str) -> int:
    """ops/door_metrics.py for the door of `runtime`, in a session of its own: it binds the socket nginx sends each
    answer to (before nginx starts, so that none is lost) and serves /metrics on `listen`. -> its PID."""
    stop_exporter(runtime)
    socket_path = shared_folder(runtime) / TELEMETRY_SOCKET
    with open(runtime / "logs" / "metrics.err", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.door_metrics", "--socket", str(socket_path), "--listen", listen],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    (runtime / EXPORTER_PID).write_text(str(proc.pid))
    deadline = time.monotonic() + EXPORTER_START_S
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the door's exporter did not start; see {runtime / 'logs' / 'metrics.err'}")
        time.sleep(0.05)
    return proc.pid


def stop_exporter(runtime: Path) -> None:
    try:
        pid = int((runtime / EXPORTER_PID).read_text())
    except (FileNotFoundError, ValueError):
        return
    if instance.alive(pid):
        os.kill(pid, signal.SIGTERM)
    (runtime / EXPORTER_PID).unlink(missing_ok=True)


def stop(runtime: Path = RUNTIME) -> bool:
    """Fast shutdown (SIGTERM) of the door's nginx and its exporter; False when nginx was not running."""
    stop_exporter(runtime)
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
    shutil.rmtree(shared_folder_path(runtime), ignore_errors=True)
    return True
