"""The door's log lines as JSON objects, one per line, for a container's stdout.

In a container (compose, Kubernetes) nginx writes no log file: it sends every line as a syslog datagram to
the door's log socket (LOG_SOCKET, beside the telemetry socket its metrics arrive on), and the process that
reads both (ops/door_metrics.py) prints each line here, on its stdout, where `docker logs` and `kubectl logs`
read it. Nothing of the door's logs lands on a volume. Two sockets, so that a flood of log lines (or a stdout
that blocks) never costs a count. Three kinds of line arrive, told apart by their syslog tag:

    door_access   an answer worth a line (ops/nginx.conf.template, `$door_logs`: not a plain 200, and one in
                  256 of the refusals by a limit): already a JSON object (`log_format door escape=json`)
    door_refused  a connection refused by the per-address cap, one in 100 (the stream layer): a JSON object
    door_error    nginx's error log (warn and above), which has a fixed text format: the fields every line of
                  the product has (digitlab/jsonlog.py: time, level, logger, message) and `connection`, the
                  number that the access line of the same request carries too

An error line's message is nginx's text as it wrote it, its context (`client: ..., request: "..."`) included,
cut at MAX_MESSAGE characters. Its context is not taken apart into fields: nginx writes the request line, the
Host and the Referer unescaped, so a client could write `", client: 6.6.6.6` there and pass for another
address; the access line of the same `connection` has the client's address from nginx itself. Whatever
arrives (a datagram cut short, one that is not what its tag says, one that is not UTF-8, or deliberately
strange: anyone on the machine may write to the socket), the result is one JSON object on one line, and
nothing raises. Standard library only.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

ACCESS_TAG, REFUSED_TAG, ERROR_TAG = "door_access", "door_refused", "door_error"
LAYER_ERROR_TAG = "door_layer_error"  # the error log of a followed door's second nginx (compose: ops/follow.py)
TAGS = {ACCESS_TAG: "door", REFUSED_TAG: "door", ERROR_TAG: "door", LAYER_ERROR_TAG: "door.layer"}
LOG_SOCKET = "logs.sock"  # beside the telemetry socket: the door's log lines (containers)
MAX_MESSAGE = 1024  # characters of an error line's text (nginx's lines are at most 2 KB), "..." marking the cut
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
# `2026/12/05 17:56:13 [error] 1580#1580: *1 connect() failed (...) while connecting to upstream, client: ...`:
# nginx's prefix (time, level, pid#thread, *connection) comes before any text of a client's.
ERROR_LINE = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] \d+#\d+: (?:\*(\d{1,18}) )?(.*)", re.DOTALL)


def split_tag(datagram: bytes) -> tuple[str, str]:
    """`<PRI>Mmm dd hh:mm:ss TAG: MESSAGE` (nginx, `nohostname`) -> (TAG, MESSAGE); ("", text) when it is not."""
    text = datagram.decode("utf-8", "replace")
    head, sep, message = text.partition(": ")
    return (head.rsplit(" ", 1)[-1], message) if sep and text.startswith("<") else ("", text)


def cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def error_fields(message: str) -> dict[str, object]:
    """One line of nginx's error log -> the fields of its JSON object (its text unparsed when it is not nginx's)."""
    match = ERROR_LINE.fullmatch(message.strip())
    try:
        stamp = datetime.strptime(match.group(1), "%Y/%m/%d %H:%M:%S").astimezone() if match else None
    except (ValueError, OverflowError, OSError):  # digits that are no date nginx writes: not nginx's line
        stamp = None
    if match is None or stamp is None:
        return {"level": "WARNING", "message": cut(message)}
    _, level, connection, text = match.groups()
    fields: dict[str, object] = {"time": stamp.isoformat(), "level": LEVELS.get(level, "WARNING"), "message": cut(text)}
    if connection:
        fields["connection"] = int(connection)
    return fields


def json_line(tag: str, message: str) -> str:
    """The JSON object (one line, no newline) for one log line nginx sent under `tag` (one of TAGS)."""
    logger = TAGS[tag]
    try:
        if tag in (ACCESS_TAG, REFUSED_TAG):
            line = json.loads(message)
            if not isinstance(line, dict):
                raise ValueError("not an object")
            return json.dumps(line | {"logger": logger}, ensure_ascii=False, allow_nan=False)
        fields = error_fields(message)
    except Exception:  # noqa: BLE001 - not what nginx writes (cut short, nested beyond recursion, NaN): its text
        fields = {"level": "WARNING", "message": cut(message)}
    fields.setdefault("time", datetime.now().astimezone().isoformat(timespec="seconds"))
    line = {"time": fields.pop("time"), "level": fields.pop("level"), "logger": logger} | fields
    return json.dumps(line, ensure_ascii=False)


def syslog(socket: Path, tag: str) -> str:
    """nginx's name for "one datagram per line to this unix socket, under `tag`" (no hostname: a local socket)."""
    return f"syslog:server=unix:{socket},nohostname,tag={tag}"


def destinations(log_socket: Path | None) -> dict[str, str]:
    """Where the door's nginx writes its logs (the templates' fields): files under logs/ (`make door`, capped by
    ops/instance.cap_logs), or with a log socket (containers) datagrams to it, printed on stdout by its reader.
    The same formats either way. `main_error_log` and `layer_error_log` are whole directives."""
    if log_socket is None:
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
        "main_error_log": f"error_log {syslog(log_socket, ERROR_TAG)} warn;{no_file}",
        "layer_error_log": f"error_log {syslog(log_socket, LAYER_ERROR_TAG)} warn;{no_file}",
        "error_log": syslog(log_socket, ERROR_TAG),
        "access_log": f"access_log {syslog(log_socket, ACCESS_TAG)} door if=$door_logs;",
        "connections_log": (f"access_log {syslog(log_socket, REFUSED_TAG)} door_connections if=$door_sampled_refusal;"),
    }
