"""The door's exporter: nginx's syslog datagrams in, Prometheus counters and histograms out."""

import io
import json
import socket
import time
import urllib.request

from ops.door_metrics import DoorMetrics, parse, print_logs, receive, serve


def test_a_datagram_is_a_model_a_status_and_a_time():
    assert parse(b"<190>Dec  5 15:55:00 nginx: palindrome 200 0.004") == ("palindrome", "200", 0.004)
    assert parse(b"<190>Dec  5 15:55:00 nginx: - 401 0.000") == ("none", "401", 0.0)
    assert parse(b"<190>Dec  5 15:55:00 nginx: grpc 200 1.250") == ("grpc", "200", 1.25)
    for junk in (b"", b"no colon here", b"<190>x: too many fields here 1", b"<190>x: m ok 0.1", b"<190>x: m 200 x"):
        assert parse(junk) is None, junk


def test_datagrams_sent_to_the_socket_are_served_as_metrics(tmp_path):
    metrics = DoorMetrics()
    path = tmp_path / "metrics.sock"
    sock = receive(metrics, path)
    server = serve(metrics, "127.0.0.1", 0)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        lines = [b"palindrome 200 0.004", b"palindrome 200 0.020", b"- 404 0.000", b"sample 429 0.000"]
        for line in lines:
            sender.sendto(b"<190>Dec  5 15:55:00 nginx: " + line, str(path))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics").read().decode()
            if 'digitlab_door_requests_total{code="429",model="sample"} 1' in text:
                break
            time.sleep(0.05)
        assert 'digitlab_door_requests_total{code="200",model="palindrome"} 2' in text
        assert 'digitlab_door_requests_total{code="404",model="none"} 1' in text
        assert 'digitlab_door_request_duration_seconds_bucket{model="palindrome",le="0.005"} 1' in text
        assert 'digitlab_door_request_duration_seconds_count{model="palindrome"} 2' in text
    finally:
        server.shutdown()
        sock.close()


def test_log_lines_are_printed_as_json_from_a_socket_of_their_own(tmp_path):
    metrics, out = DoorMetrics(), io.StringIO()
    counts, lines = receive(metrics, tmp_path / "telemetry.sock"), print_logs(tmp_path / "logs.sock", out)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        logs = str(tmp_path / "logs.sock")
        sender.sendto(b'<190>Dec  5 15:55:00 door_access: {"status":401,"request_id":"r-1"}', logs)
        sender.sendto(b"<187>Dec  5 15:55:00 door_error: 2026/12/05 15:55:00 [warn] 7#7: *3 a warning", logs)
        sender.sendto(b"<190>Dec  5 15:55:00 door: - 401 0.000", logs)  # a count sent to the log socket: not one
        sender.sendto(b"<190>Dec  5 15:55:00 door: - 401 0.000", str(tmp_path / "telemetry.sock"))
        deadline = time.monotonic() + 5
        while out.getvalue().count("\n") < 2 or "digitlab_door_requests_total{" not in metrics.registry.render():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.02)
        time.sleep(0.1)
    finally:
        counts.close()
        lines.close()
    access, error = (json.loads(line) for line in out.getvalue().splitlines())
    assert access == {"status": 401, "request_id": "r-1", "logger": "door"}
    assert (error["level"], error["message"], error["connection"]) == ("WARNING", "a warning", 3)
    assert 'digitlab_door_requests_total{code="401",model="none"} 1' in metrics.registry.render()


def test_a_datagram_that_cannot_be_handled_stops_nothing(tmp_path):
    """stdout gone (closed, a broken pipe), a datagram no parser takes: skipped, the threads go on."""
    closed = io.StringIO()
    closed.close()
    metrics = DoorMetrics()
    metrics.count = lambda datagram, count=metrics.count: count(datagram) if b"raise" not in datagram else 1 / 0
    counts, lines = receive(metrics, tmp_path / "telemetry.sock"), print_logs(tmp_path / "logs.sock", closed)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(b'<190>Dec  5 15:55:00 door_access: {"status":401}', str(tmp_path / "logs.sock"))
        sender.sendto(b"raise", str(tmp_path / "telemetry.sock"))
        sender.sendto(b"<190>Dec  5 15:55:00 door: - 401 0.000", str(tmp_path / "telemetry.sock"))
        deadline = time.monotonic() + 5
        while "digitlab_door_requests_total{" not in metrics.registry.render():
            assert time.monotonic() < deadline, "the answer after the one that raised was not counted"
            time.sleep(0.02)
        assert lines.fileno() >= 0  # the log socket's thread is alive: its socket still open
    finally:
        counts.close()
        lines.close()
