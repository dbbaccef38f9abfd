"""The door's exporter: nginx's syslog datagrams in, Prometheus counters and histograms out."""

import io
import json
import socket
import time
import urllib.request

from ops.door_metrics import DoorMetrics, parse, receive, serve


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


def test_log_lines_on_the_same_socket_are_printed_as_json_not_counted(tmp_path):
    metrics, out = DoorMetrics(), io.StringIO()
    path = tmp_path / "telemetry.sock"
    sock = receive(metrics, path, logs=out)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(b'<190>Dec  5 15:55:00 door_access: {"status":401,"request_id":"r-1"}', str(path))
        sender.sendto(b"<187>Dec  5 15:55:00 door_error: 2026/12/05 15:55:00 [warn] 7#7: *3 a warning", str(path))
        sender.sendto(b"<190>Dec  5 15:55:00 door: - 401 0.000", str(path))
        deadline = time.monotonic() + 5
        while out.getvalue().count("\n") < 2 or not metrics.registry.render().count("code="):
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.02)
    finally:
        sock.close()
    access, error = (json.loads(line) for line in out.getvalue().splitlines())
    assert access == {"status": 401, "request_id": "r-1", "logger": "door"}
    assert (error["level"], error["message"], error["connection"]) == ("WARNING", "a warning", 3)
    assert metrics.registry.render().count("digitlab_door_requests_total{") == 1  # the answer, once; no log line
