"""The door's Prometheus metrics: every answer nginx gives, counted by model and status, timed by model.

    python -m ops.door_metrics --socket /door/telemetry.sock --listen 0.0.0.0:9145

nginx OSS counts nothing per route (its stub_status has three global numbers), and the door's access log
keeps only what is not a plain 200, by design (bounded logs). So the door sends one more, tiny log line per
answer (`log_format door_metrics`: model, status, seconds) as a syslog datagram to a unix socket that this
process reads: nothing is written to disk, nginx never waits (when nobody reads, the kernel drops the
datagram), and every answer is counted, the door's own 401, 404, 413, 429 and 5xx included. It serves the
counts at /metrics (text format, ops.metrics):

    digitlab_door_requests_total{model, code}               counter
    digitlab_door_request_duration_seconds{model}           histogram (0.005 .. 10 s)

A gRPC call's model is inside its protobuf body, which the door does not read: gRPC answers count under
model "grpc". In a container nginx sends its log lines to a second socket beside this one (door_logs.LOG_SOCKET;
DoorSettings.stdout_logs), which this process prints on its stdout as JSON objects (ops/door_logs.py): it is
the door's telemetry, counted and printed. Standard library only (the door's image has no third-party package).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from ops import door_logs
from ops.metrics import CONTENT_TYPE, Counter, Histogram, Registry

METRICS_PORT = 9145
DATAGRAM_MAX = 8192  # a door_metrics line is ~60 bytes with its syslog header; nginx's error lines, at most 2 KB
NO_MODEL = "none"  # answers of routes that name no model (/health, the page, refusals of unknown routes)
GRPC_MODEL = "grpc"


def parse(datagram: bytes) -> tuple[str, str, float] | None:
    """One syslog datagram from nginx -> (model, status code, seconds), or None when it is not one of ours.

    nginx writes `<PRI>Mmm dd hh:mm:ss TAG: MESSAGE` (no hostname over a unix socket with `nohostname`); the
    message is `model status seconds` (log_format door_metrics in ops/nginx.conf.template).
    """
    _, sep, message = datagram.decode("ascii", "replace").partition(": ")
    fields = message.split()
    if not sep or len(fields) != 3 or not fields[1].isdigit():
        return None
    model, code, seconds = fields
    try:
        elapsed = float(seconds)
    except ValueError:
        return None
    return (model if model not in ("", "-") else NO_MODEL), code, elapsed


class DoorMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.add(
            Counter("digitlab_door_requests_total", "every answer of the door, by model and HTTP status")
        )
        self.duration = self.registry.add(
            Histogram("digitlab_door_request_duration_seconds", "time from the request's first byte to its answer")
        )

    def count(self, datagram: bytes) -> None:
        if (parsed := parse(datagram)) is not None:
            model, code, seconds = parsed
            self.requests.inc({"model": model, "code": code})
            self.duration.observe(seconds, {"model": model})


def bind(path: Path) -> socket.socket:
    """A unix datagram socket at `path` (a stale one replaced), writable by nginx's workers (another user)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # nginx's workers (nobody, or the owner of the door's files) send here
    return sock


def each_datagram(sock: socket.socket, handle: Callable[[bytes], None], name: str) -> None:
    """`handle` every datagram `sock` receives, from a thread of its own, until the socket is closed. One that
    `handle` cannot take is skipped: no datagram stops the door's telemetry."""

    def loop() -> None:
        while True:
            try:
                datagram = sock.recv(DATAGRAM_MAX)
            except OSError:  # closed: the exporter is stopping
                return
            try:
                handle(datagram)
            except Exception:  # noqa: BLE001 - see above
                pass

    threading.Thread(target=loop, name=name, daemon=True).start()


def receive(metrics: DoorMetrics, path: Path) -> socket.socket:
    """Count the answers nginx sends to the telemetry socket at `path`. -> the socket."""
    sock = bind(path)
    each_datagram(sock, metrics.count, "door-metrics")
    return sock


def print_logs(path: Path, logs: TextIO = sys.stdout) -> socket.socket:
    """Print the log lines nginx sends to the log socket at `path` on `logs`, one JSON object each (containers:
    DoorSettings.stdout_logs). A socket of its own: a flood of lines, or a stdout that blocks, fills this
    socket's queue (nginx then drops lines, never waits), never the one the counts arrive on. -> the socket."""

    def write(datagram: bytes) -> None:
        tag, message = door_logs.split_tag(datagram)
        if tag in door_logs.TAGS:
            logs.write(door_logs.json_line(tag, message) + "\n")
            logs.flush()  # a line at a time: a container's log shows it now, and a crash loses none

    sock = bind(path)
    each_datagram(sock, write, "door-logs")
    return sock


def serve(metrics: DoorMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """GET /metrics on host:port, from a thread of its own. -> the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            found = self.path == "/metrics"
            body = metrics.registry.render().encode() if found else b"GET /metrics\n"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scraped every few seconds: no line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="door-metrics-http", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, required=True, help="the door's telemetry socket (nginx's datagrams)")
    p.add_argument("--listen", default=f"127.0.0.1:{METRICS_PORT}", help="host:port of /metrics")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    metrics = DoorMetrics()
    receive(metrics, args.socket)
    print_logs(args.socket.with_name(door_logs.LOG_SOCKET))
    serve(metrics, host, int(port))
    threading.Event().wait()  # until the process is stopped


if __name__ == "__main__":
    main()
