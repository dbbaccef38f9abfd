"""The door under floods, end to end: nginx (on free ports) in front of the session's real TorchServe.

1. One address cannot starve the others: 1,500 connections from 127.0.0.2 that send half a request and
   hold it, reopened whenever the door closes one, while a keyed client from 127.0.0.1 opens a fresh
   connection for every request.
2. A flood without a key costs little and logs little: 20,000 keyless requests with 7 KB paths.
3. /health does not flap: 128 keyless clients asking it at once, while the server is ready.

Every loop here is bounded in count and in time, and all traffic stays on 127.0.0.0/8 (every address of
it is loopback on Linux, so each source address is a distinct client as the door sees it).
"""

from __future__ import annotations

import http.client
import json
import resource
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from ops import door as ops_door
from ops import probe
from tests.e2e.doors import RunningDoor, open_door

pytestmark = pytest.mark.server
if (missing := ops_door.missing_nginx()) is not None:
    pytest.skip(f"door flood tests skipped: {missing}", allow_module_level=True)

HOST = "127.0.0.1"
KEYED_CLIENT = "127.0.0.1"
HOLDER = "127.0.0.2"  # holds half-sent requests
LOG_FLOODER = "127.0.0.5"  # keyless requests with long paths
HEALTH_CLIENTS = [f"127.0.1.{i}" for i in range(1, 129)]  # 128 probes, each its own address
HALF_SENT = 1_500
HOLD_S = 20.0
REOPENS_PER_S = 5_000  # the holder reopens what the door closes at once, up to this rate (the test's own CPU)
MAX_OPENS = HALF_SENT + int(REOPENS_PER_S * HOLD_S)  # its connection attempts in all
KEYED_EVERY_S = 0.1
KEYED_TIMEOUT_S = 5.0
LOG_FLOOD_REQUESTS = 20_000
LOG_FLOOD_PATH_BYTES = 7_000
PIPELINE = 100  # requests written at once on one connection before their answers are read
LOG_BUDGET_BYTES = 25 * 1024 * 1024
HEALTH_S = 15.0
FILES_NEEDED = HALF_SENT + 512  # the holder's sockets, the keyed client's, the test's own


@pytest.fixture(scope="module")
def flood_door(server, tmp_path_factory):
    """A door of its own, with the shipped limits, in front of the session's TorchServe."""
    running = open_door(server, tmp_path_factory.mktemp("flood_door"))
    try:
        yield running
    finally:
        ops_door.stop(running.runtime)


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"this test holds {needed} sockets; the process may open {hard} files (ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- 1. one address cannot starve the others ------------------------------------------------------------


@dataclass
class Holder:
    """Keeps `count` connections from `source` open, each having sent half a request; reopens any that the door
    closes (at most REOPENS_PER_S a second), until `stop` is set, `seconds` have passed or MAX_OPENS attempts
    were made."""

    port: int
    source: str = HOLDER
    count: int = HALF_SENT
    seconds: float = HOLD_S
    opens: int = 0
    closed_by_door: int = 0
    most_open: int = 0
    ran_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)

    HALF = b"GET / HTTP/1.1\r\nHost: x\r\n"  # never the blank line that ends the headers

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        began = time.monotonic()
        deadline = began + self.seconds

        def open_one() -> None:
            self.opens += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
            sock.setblocking(False)
            sock.bind((self.source, 0))
            try:
                sock.connect((HOST, self.port))
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                return
            selector.register(sock, selectors.EVENT_WRITE, "connecting")

        def close(sock: socket.socket) -> None:
            selector.unregister(sock)
            sock.close()

        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                allowed = min(MAX_OPENS, self.count + int(REOPENS_PER_S * (time.monotonic() - began)))
                while len(selector.get_map()) < self.count and self.opens < allowed:
                    open_one()
                self.most_open = max(self.most_open, len(selector.get_map()))
                if len(selector.get_map()) >= self.count:
                    self.holding.set()
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    if key.data == "connecting":
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            close(sock)
                            continue
                        try:
                            sock.send(self.HALF)
                        except OSError:
                            close(sock)
                            continue
                        selector.modify(sock, selectors.EVENT_READ, "holding")
                    else:  # the door answered or closed: either way this connection is over, open another
                        try:
                            sock.recv(4096)
                        except OSError:
                            pass
                        self.closed_by_door += 1
                        close(sock)
                if self.opens >= MAX_OPENS and not selector.get_map():
                    break
        finally:
            self.ran_s = time.monotonic() - began
            self.holding.set()
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()


def keyed_request(door: RunningDoor) -> str:
    """One prediction on a fresh connection: "ok", or what went wrong."""
    conn = http.client.HTTPConnection(HOST, door.door.port, timeout=KEYED_TIMEOUT_S, source_address=(KEYED_CLIENT, 0))
    try:
        conn.request(
            "POST",
            "/predictions/palindrome",
            body=b'{"digits": [3, 4, 4]}',
            headers={"Authorization": f"Bearer {door.key}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200 and json.loads(body)["digit"] == 3:
            return "ok"
        return f"{resp.status}"
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__
    finally:
        conn.close()


def test_one_address_holding_half_sent_requests_does_not_starve_another(flood_door, record_property):
    raise_file_limit(FILES_NEEDED)
    holder = Holder(port=flood_door.door.port)
    thread = threading.Thread(target=holder.run, name="holder", daemon=True)
    started = time.monotonic()
    thread.start()
    holder.holding.wait(timeout=HOLD_S)
    outcomes: Counter[str] = Counter()
    try:
        while thread.is_alive() and time.monotonic() - started < HOLD_S - 1:
            asked = time.monotonic()
            outcomes[keyed_request(flood_door)] += 1
            time.sleep(max(0.0, KEYED_EVERY_S - (time.monotonic() - asked)))
    finally:
        holder.stop.set()
        thread.join(timeout=30)
    total = sum(outcomes.values())
    figures = {
        "keyed_requests": total,
        "keyed_answered": outcomes["ok"],
        "keyed_failures": dict(outcomes - Counter(ok=outcomes["ok"])),
        "holder_opens": holder.opens,
        "holder_seconds": round(holder.ran_s, 1),
        "holder_most_open": holder.most_open,
        "holder_closed_by_door": holder.closed_by_door,
    }
    record_property("half_sent_flood", figures)
    print(f"\nhalf-sent flood: {figures}")
    assert total >= 50, figures  # the keyed client kept asking through the flood
    assert outcomes["ok"] >= 0.99 * total, figures


# -- 2. keyless floods cost little and log little -------------------------------------------------------


def read_answers(sock: socket.socket, buffered: bytes, count: int) -> tuple[list[int], bytes]:
    """Read `count` HTTP answers (status line, headers, Content-Length body) from `sock`; -> their statuses and
    what was read beyond them. Fewer when the door closes the connection."""
    statuses, data = [], buffered
    while len(statuses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = next((int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0)
            if len(data) >= head_end + 4 + length:
                statuses.append(int(head[0].split()[1]))
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return statuses, data


def keyless_flood(port: int, total: int, source: str) -> Counter[int]:
    """`total` keyless requests with long paths (404s and 401s), PIPELINE at a time on keep-alive connections."""
    filler = "a" * LOG_FLOOD_PATH_BYTES
    kinds = [
        f"GET /{filler} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # a route the door does not serve: 404
        f"POST /predictions/palindrome?{filler} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode(),  # 401
    ]
    statuses: Counter[int] = Counter()
    sent = 0
    deadline = time.monotonic() + 120
    while sent < total and time.monotonic() < deadline:
        with socket.create_connection((HOST, port), timeout=10, source_address=(source, 0)) as sock:
            buffered = b""
            for _ in range(5):  # well below nginx's keepalive_requests (1,000)
                batch = min(PIPELINE, total - sent)
                if batch <= 0:
                    break
                sock.sendall(b"".join(kinds[(sent + i) % 2] for i in range(batch)))
                answers, buffered = read_answers(sock, buffered, batch)
                statuses.update(answers)
                sent += batch
                if len(answers) < batch:  # closed by the door: what it did not answer counts as sent
                    statuses["closed"] += batch - len(answers)
                    break
    return statuses


def test_a_keyless_flood_with_long_paths_writes_little_log(flood_door, record_property):
    before, errors_before = flood_door.log_bytes(), flood_door.error_log_bytes()
    started = time.monotonic()
    statuses = keyless_flood(flood_door.door.port, LOG_FLOOD_REQUESTS, LOG_FLOODER)
    seconds = time.monotonic() - started
    time.sleep(1.5)  # the access log's buffer is flushed within a second
    added, errors_added = flood_door.log_bytes() - before, flood_door.error_log_bytes() - errors_before
    figures = {
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "seconds": round(seconds, 1),
        "log_bytes_added": added,
        "error_log_bytes_added": errors_added,
    }
    record_property("keyless_flood", figures)
    print(f"\nkeyless flood: {figures}")
    assert sum(statuses.values()) == LOG_FLOOD_REQUESTS, figures
    assert set(statuses) <= {401, 404, 429}, figures  # every one answered at the door, none closed unanswered
    assert added < LOG_BUDGET_BYTES, figures
    assert errors_added < 64 * 1024, figures  # refusals by a limit are not an error line each


# -- 3. /health does not flap ---------------------------------------------------------------------------


def probe_health(port: int, source: str, until: float, statuses: Counter) -> None:
    """GET /health over one keep-alive connection until `until`; every answer's status (or error) counted."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10, source_address=(source, 0))
    try:
        while time.monotonic() < until:
            try:
                conn.request("GET", "/health")
                resp = conn.getresponse()
                resp.read()
                statuses[resp.status] += 1
            except (OSError, http.client.HTTPException) as err:
                statuses[type(err).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10, source_address=(source, 0))
    finally:
        conn.close()


def test_health_under_a_flood_of_probes_says_ready_while_the_server_is(flood_door, server, record_property):
    ready_url = server.endpoints.ready + ops_door.READY_PATH
    assert probe.check(ready_url, 5.0), "the server is not ready before the flood"
    per_client = [Counter() for _ in HEALTH_CLIENTS]
    until = time.monotonic() + HEALTH_S
    threads = [
        threading.Thread(target=probe_health, args=(flood_door.door.port, addr, until, counts), daemon=True)
        for addr, counts in zip(HEALTH_CLIENTS, per_client, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=HEALTH_S + 30)
    statuses = sum(per_client, Counter())
    assert probe.check(ready_url, 5.0), "the server is not ready after the flood"
    figures = {"answers": sum(statuses.values()), "statuses": {str(k): v for k, v in statuses.items()}}
    record_property("health_flood", figures)
    print(f"\nhealth flood: {figures}")
    assert statuses[200] > 0 and set(statuses) == {200}, figures
