"""The door's log lines as JSON objects, one per line, for a container's stdout.

In a container (compose, Kubernetes) nginx writes no log file: it sends every line as a syslog datagram to
the door's telemetry socket, the one its metrics already arrive on (ops/door_metrics.py), and the process
reading that socket prints each line here, on its stdout, where `docker logs` and `kubectl logs` read it.
Nothing of the door's logs lands on a volume. Three kinds of line arrive, told apart by their syslog tag:

    door_access   an answer worth a line (ops/nginx.conf.template, `$door_logs`: not a plain 200, and one in
                  256 of the refusals by a limit): already a JSON object (`log_format door escape=json`)
    door_refused  a connection refused by the per-address cap, one in 100 (the stream layer): a JSON object
    door_error    nginx's error log (warn and above), which has a fixed text format: parsed into an object
                  with the same fields as every other line of the product (digitlab/jsonlog.py: time, level,
                  logger, message) and nginx's own (`connection`, which names the access line's `connection`,
                  `client`, `request`, `upstream`)

A datagram nginx could not send whole, or one that is not what its tag says, is still one JSON object (its
text as `message`): the stream stays one object per line whatever arrives. Standard library only.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

ACCESS_TAG, REFUSED_TAG, ERROR_TAG = "door_access", "door_refused", "door_error"
LAYER_ERROR_TAG = "door_layer_error"  # the error log of a followed door's second nginx (compose: ops/follow.py)
TAGS = {ACCESS_TAG: "door", REFUSED_TAG: "door", ERROR_TAG: "door", LAYER_ERROR_TAG: "door.layer"}
# nginx's error levels -> the product's level names (logging's, as digitlab/jsonlog.py writes them).
LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "notice": "INFO",
    "warn": "WARNING",
    "error": "ERROR",
    "crit": "CRITICAL",
    "alert": "CRITICAL",
    "emerg": "CRITICAL",
}
# `2026/12/05 17:56:13 [error] 1580#1580: *1 connect() failed (...) while connecting to upstream, client: ...`
ERROR_LINE = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] \d+#\d+: (?:\*(\d+) )?(.*)", re.DOTALL)
# The context nginx appends to an error line; the request and upstream are quoted, unescaped, so each ends at
# the next field's name.
CONTEXT = re.compile(r", (client|server|request|upstream|host|referrer): ")


def split_tag(datagram: bytes) -> tuple[str, str]:
    """`<PRI>Mmm dd hh:mm:ss TAG: MESSAGE` (nginx, `nohostname`) -> (TAG, MESSAGE); ("", text) when it is not."""
    text = datagram.decode("utf-8", "replace")
    head, sep, message = text.partition(": ")
    return (head.rsplit(" ", 1)[-1], message) if sep and text.startswith("<") else ("", text)


def error_fields(message: str) -> dict[str, object]:
    """One line of nginx's error log -> the fields of its JSON object."""
    match = ERROR_LINE.fullmatch(message.strip())
    if match is None:
        return {"level": "WARNING", "message": message.strip()}
    stamp, level, connection, rest = match.groups()
    fields: dict[str, object] = {
        "time": datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S").astimezone().isoformat(),
        "level": LEVELS.get(level, level.upper()),
    }
    parts = CONTEXT.split(rest)  # [message, name, value, name, value, ...]
    fields["message"] = parts[0]
    if connection:
        fields["connection"] = int(connection)
    for name, value in zip(parts[1::2], parts[2::2]):
        if value not in ("", '""'):
            fields[name] = value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    return fields


def json_line(tag: str, message: str) -> str:
    """The JSON object (one line, no newline) for one log line nginx sent under `tag` (one of TAGS)."""
    logger = TAGS[tag]
    if tag in (ACCESS_TAG, REFUSED_TAG):
        try:
            line = json.loads(message)
        except ValueError:
            line = None
        if isinstance(line, dict):
            return json.dumps(line | {"logger": logger}, ensure_ascii=False)
        fields: dict[str, object] = {"level": "WARNING", "message": message.strip()}
    else:
        fields = error_fields(message)
    fields.setdefault("time", datetime.now().astimezone().isoformat(timespec="seconds"))
    return json.dumps({"time": fields.pop("time"), "level": fields.pop("level"), "logger": logger} | fields)


def syslog(socket: Path, tag: str) -> str:
    """nginx's name for "one datagram per line to this unix socket, under `tag`" (no hostname: a local socket)."""
    return f"syslog:server=unix:{socket},nohostname,tag={tag}"


def destinations(telemetry_socket: Path | None) -> dict[str, str]:
    """Where the door's nginx writes its logs (the templates' fields): files under logs/ (`make door`, capped by
    ops/instance.cap_logs), or with a telemetry socket (containers) datagrams to it, printed on stdout by its
    reader. The same formats either way. `main_error_log` and `layer_error_log` are whole directives."""
    if telemetry_socket is None:
        return {
            "main_error_log": "error_log logs/error.log warn;",
            "layer_error_log": "error_log logs/follow-error.log warn;",
            "error_log": "logs/error.log",
            "access_log": "access_log logs/access.log door if=$door_logs buffer=32k flush=1s;",
            "connections_log": "access_log logs/connections.log door_connections if=$door_sampled_refusal;",
        }
    # nginx keeps an error log in a file whatever the config names (else the -e one, stderr, at level error: every
    # error line was written twice, once as text): /dev/null, for emergencies only, which the socket has too.
    no_file = "\nerror_log /dev/null emerg;"
    return {
        "main_error_log": f"error_log {syslog(telemetry_socket, ERROR_TAG)} warn;{no_file}",
        "layer_error_log": f"error_log {syslog(telemetry_socket, LAYER_ERROR_TAG)} warn;{no_file}",
        "error_log": syslog(telemetry_socket, ERROR_TAG),
        "access_log": f"access_log {syslog(telemetry_socket, ACCESS_TAG)} door if=$door_logs;",
        "connections_log": (
            f"access_log {syslog(telemetry_socket, REFUSED_TAG)} door_connections if=$door_sampled_refusal;"
        ),
    }
