"""The door follows its replicas: only a replica that is ready is an upstream (`make up`'s door runs this).

    python -m ops.follow --runtime /door        (deploy/compose.yaml's door; settings in /door/follow.json)

Docker Compose runs the replicas as one service on a bridge network. Docker's DNS answers the service's
name with one address per running replica, and those addresses change whenever a replica is killed,
restarted, scaled or replaced. nginx (the open-source build) resolves an upstream's name once, at start,
and cannot ask a replica whether its models are loaded: a replica that listens while it loads got
traffic and failed it. So this process runs the door (nginx.conf, rendered with `replicas=None`) and its
followed layer (follow.conf: a second nginx that the door hands every request to over unix sockets) as its
children and, every POLL_S:

1. resolves the service's name (a killed or stopped replica drops out of Docker's answer at once);
2. asks each address's readiness endpoint (the supervisor's /ready: 200 once every model has answered
   its warm-up, 503 while loading, draining before a stop, or restarting TorchServe);
3. when the set of ready replicas changes, rewrites the layer's server lists (upstreams/*.conf) and
   reloads the layer alone. Its reload is graceful (requests in flight finish on the old workers, new
   ones meet the new set), and the door, never reloaded for a replica, keeps its clients' connections
   (ops/nginx.follow.conf.template says why that takes a second nginx). Between two polls the layer's
   retry covers a replica that just failed (`proxy_next_upstream`).

A replica that does not answer its readiness check in time (a busy machine) keeps its standing until
it has missed MISSES_TO_DROP checks in a row; an answer other than 200, or a refused connection, counts
at once. Every change is a JSON line on stderr (the container's log) and the current set is in
<runtime>/upstreams.json, which `make up` and `make rollout` wait on. When either nginx exits, so do the
other and this process, with its status. SIGTERM stops the door gracefully (SIGQUIT: it finishes what it
holds), then the layer; SIGHUP reloads the door (new client keys). Neither nginx writes a log file: both
send their lines to the telemetry socket this process reads, and it prints them on stdout as JSON
(ops/door_logs.py), beside the door's metrics it serves on :9145.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from digitlab.jsonlog import json_handler
from ops import door, door_logs, door_metrics, probe

SETTINGS = "follow.json"  # written by deploy/compose.py next to the door's nginx.conf
LAYER_PID = "follow.pid"  # the followed layer's (ops/nginx.follow.conf.template's `pid`)
STATUS = "upstreams.json"  # what this process last gave nginx: read by deploy/compose.py
POLL_S = 0.5  # well inside the supervisor's drain quiet time (2 s): a draining replica leaves before it stops
CHECK_TIMEOUT_S = 2.0  # one readiness check; /ready answers in ~1 ms on an idle replica
MISSES_TO_DROP = 2  # checks in a row without an answer before a ready replica is dropped
STOP_GRACE_S = 30.0  # nginx's graceful stop: requests in flight finish (the door's read timeout is per read)
FOREGROUND = ("-g", "daemon off;")  # both nginx are this process's children


@dataclass(frozen=True)
class Settings:
    """Where the replicas are: a name Docker's DNS resolves, and the ports every replica listens on."""

    service: str
    rest_port: int
    grpc_port: int
    ready_port: int
    ready_path: str = door.READY_PATH

    def replica(self, address: str) -> door.Replica:
        return door.Replica(
            rest=f"{address}:{self.rest_port}", grpc=f"{address}:{self.grpc_port}", ready=f"{address}:{self.ready_port}"
        )


@dataclass
class Standing:
    """What the follower knows of one address: ready or not, and how many checks in a row went unanswered."""

    ready: bool = False
    misses: int = 0


@dataclass
class Follower:
    """The pure part: check results in, the set of ready addresses out (no sockets, no nginx)."""

    standings: dict[str, Standing] = field(default_factory=dict)

    def update(self, checks: dict[str, bool | None]) -> list[str]:
        """`checks`: every address the name resolves to now -> True (200), False (another answer, or
        refused), None (no answer in time). Returns the ready addresses, sorted. An address no longer
        resolved is forgotten: its replica is gone."""
        self.standings = {a: self.standings.get(a, Standing()) for a in checks}
        for address, result in checks.items():
            standing = self.standings[address]
            if result is None:
                standing.misses += 1
                if standing.misses >= MISSES_TO_DROP:
                    standing.ready = False
            else:
                standing.ready, standing.misses = result, 0
        return sorted(a for a, s in self.standings.items() if s.ready)


def resolve(name: str) -> list[str]:
    """Every IPv4 address `name` resolves to (Docker's DNS: one per running container of the service)."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []  # no replica running (or the name is not known yet)
    return sorted({info[4][0] for info in infos})


def check(url: str) -> bool | None:
    """True: 200. False: any other answer, or a refused connection. None: no answer in CHECK_TIMEOUT_S."""
    return probe.check(url, CHECK_TIMEOUT_S)


def write_upstreams(runtime: Path, replicas: list[door.Replica]) -> None:
    """The door's server lists for these replicas (none: every upstream one server marked down)."""
    folder = runtime / door.FOLLOWED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in door.upstream_includes(replicas).items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)  # nginx never reads half a file


def write_status(runtime: Path, ready: list[str], resolved: list[str], reloads: int) -> None:
    tmp = runtime / f".{STATUS}.tmp"
    tmp.write_text(json.dumps({"ready": ready, "resolved": resolved, "reloads": reloads, "at": time.time()}))
    tmp.replace(runtime / STATUS)


# The follower's own lines, JSON objects on stderr as every line of the door's container (main sets it up).
LOG = logging.getLogger("door.follow")


def start_nginx(runtime: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The followed layer (follow.conf), then the door itself (nginx.conf), each awaited until it is up."""
    pid_files = {door.FOLLOW_CONFIG: runtime / LAYER_PID, door.CONFIG: runtime / door.PID}
    for stale in [
        *door.followed_sockets(runtime).values(),
        *door.internal_sockets(runtime).values(),
        *pid_files.values(),
    ]:
        stale.unlink(missing_ok=True)  # left by a killed container: nginx would not bind over a socket
    deadline = time.monotonic() + STOP_GRACE_S
    started = []
    for config, what in ((door.FOLLOW_CONFIG, "the followed layer"), (door.CONFIG, "the door")):
        started.append(subprocess.Popen([*door.nginx_command(runtime, config), *FOREGROUND]))
        try:
            await_pid_file(started[-1], pid_files[config], what, deadline)
        except SystemExit:
            for proc in started:
                proc.kill()
            raise
    layer, front = started
    return layer, front


def await_pid_file(proc: subprocess.Popen, pid_file: Path, what: str, deadline: float) -> None:
    """Until nginx `proc` has written its PID to `pid_file`. nginx writes it once it listens and handles signals:
    before, a client's first request was refused, and a stop asked for at once killed it (SIGQUIT's default)."""
    while not (pid_file.is_file() and pid_file.read_text().strip() == str(proc.pid)):
        if proc.poll() is not None or time.monotonic() > deadline:
            LOG.critical(f"{what} did not start (exit {proc.poll()}): its error lines are on stdout")
            raise SystemExit(1)
        time.sleep(0.05)


def run(runtime: Path, settings: Settings) -> int:
    """Follow `settings.service` until the door's nginx exits; returns its exit status."""
    follower, pool = Follower(), ThreadPoolExecutor(max_workers=8)

    def poll() -> tuple[list[str], list[str]]:
        resolved = resolve(settings.service)
        urls = [f"http://{settings.replica(a).ready}{settings.ready_path}" for a in resolved]
        return follower.update(dict(zip(resolved, pool.map(check, urls)))), resolved

    ready, resolved = poll()
    write_upstreams(runtime, [settings.replica(a) for a in ready])
    # The door's metrics, counted here from nginx's datagrams and served to Prometheus on the serving network, and
    # its log lines, printed on stdout: the socket is bound before nginx starts, so that no answer goes uncounted.
    metrics = door_metrics.DoorMetrics()
    door_metrics.receive(metrics, runtime / door.TELEMETRY_SOCKET)
    door_metrics.print_logs(runtime / door_logs.LOG_SOCKET)
    door_metrics.serve(metrics, "0.0.0.0", door_metrics.METRICS_PORT)
    layer, front = start_nginx(runtime)
    reloads = 0
    write_status(runtime, ready, resolved, reloads)
    LOG.info(
        f"door {front.pid}, layer {layer.pid}; {settings.service}: {resolved or 'nothing'}, ready: {ready or 'none'}",
        extra={"event": "started", "resolved": resolved, "ready": ready},
    )
    stopping: list[float] = []  # when the stop was asked for: from then on no reload, and a deadline

    def stop(signum: int, _frame: object) -> None:
        if front.poll() is None and not stopping:
            stopping.append(time.monotonic())
            front.send_signal(signal.SIGQUIT)  # graceful: the door finishes what it holds, then the layer stops

    def reload(signum: int, _frame: object) -> None:
        if front.poll() is None and not stopping:
            front.send_signal(signal.SIGHUP)  # new client keys or limits (make up re-rendered them): no restart

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    while front.poll() is None and layer.poll() is None:
        time.sleep(POLL_S)
        if stopping:
            if time.monotonic() - stopping[0] > STOP_GRACE_S:
                front.terminate()  # fast stop: what is still in flight is cut
            continue
        now, resolved = poll()
        if now != ready:
            write_upstreams(runtime, [settings.replica(a) for a in now])
            layer.send_signal(signal.SIGHUP)  # only the layer reloads: clients' connections stay open
            reloads += 1
            gone, new = sorted(set(ready) - set(now)), sorted(set(now) - set(ready))
            LOG.info(
                f"ready: {now or 'none'} (in: {new or '-'}, out: {gone or '-'})",
                extra={"event": "ready_changed", "ready": now, "joined": new, "left": gone},
            )
            ready = now
        write_status(runtime, ready, resolved, reloads)
    pool.shutdown(wait=False)
    for proc in (front, layer):  # whichever ended first, the other follows it (the door first: it holds clients)
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if not stopping:
        LOG.error(
            f"nginx exited by itself (door {front.returncode}, layer {layer.returncode})",
            extra={"event": "nginx_exited", "door_code": front.returncode, "layer_code": layer.returncode},
        )
    return front.returncode if front.returncode else layer.returncode


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", type=Path, default=Path("/door"), help=f"the door's prefix, holding {SETTINGS}")
    args = p.parse_args(argv)
    LOG.addHandler(json_handler(sys.stderr))
    LOG.setLevel(logging.INFO)
    settings = Settings(**json.loads((args.runtime / SETTINGS).read_text()))
    code = run(args.runtime, settings)
    sys.exit(code if code >= 0 else 128 - code)  # killed by signal n: 128 + n, as a shell reports it


if __name__ == "__main__":
    main()
