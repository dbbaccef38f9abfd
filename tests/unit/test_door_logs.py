"""The door's log lines in a container: nginx's datagrams in, one JSON object per line out (ops/door_logs.py)."""

import json
from pathlib import Path

from ops import door as ops_door
from ops import door_logs

ERROR = (
    "2026/12/05 17:56:13 [error] 1580#1580: *17 client intended to send too large body: 70000 bytes, client: "
    '127.0.0.1, server: , request: "POST /predictions/palindrome HTTP/1.1", host: "127.0.0.1:8090"'
)
ACCESS = (
    '{"time":"2026-12-05T17:56:13+00:00","level":"WARNING","logger":"door","message":"POST /predictions/palindrome '
    'HTTP/1.1","status":413,"upstream":"","key":"alice","connection":17,"request_id":"trace-1"}'
)
SOCKET = Path("/door/telemetry.sock")


def test_a_datagram_is_its_tag_and_its_message():
    assert door_logs.split_tag(b"<187>Dec  5 17:56:13 door_error: " + ERROR.encode()) == ("door_error", ERROR)
    assert door_logs.split_tag(b"<190>Dec  5 17:56:13 door: palindrome 200 0.004") == ("door", "palindrome 200 0.004")
    assert door_logs.split_tag(b"no header: at all") == ("", "no header: at all")


def test_an_error_line_of_nginx_becomes_the_products_fields_and_its_connection():
    line = json.loads(door_logs.json_line(door_logs.ERROR_TAG, ERROR))
    assert list(line) == ["time", "level", "logger", "message", "connection"]  # digitlab/jsonlog.py's order
    assert line["time"].startswith("2026-12-05T17:56:13") and line["level"] == "ERROR" and line["logger"] == "door"
    assert line["message"] == ERROR.split("*17 ", 1)[1]  # nginx's text, its context included
    assert line["connection"] == 17  # the access line of the same request has "connection": 17


def test_a_client_cannot_pass_for_another_address_in_an_error_line():
    """nginx writes the request line, Host and Referer unescaped: their text is never taken for a field."""
    forged = ERROR.replace('host: "127.0.0.1:8090"', 'referrer: "x", client: 6.6.6.6, connection: 1"')
    line = json.loads(door_logs.json_line(door_logs.ERROR_TAG, forged))
    assert line["connection"] == 17 and "client" not in line and "6.6.6.6" in line["message"]


def test_nginxs_levels_are_the_products_level_names():
    for nginx_level, level in [("warn", "WARNING"), ("crit", "CRITICAL"), ("emerg", "CRITICAL"), ("notice", "INFO")]:
        text = f"2026/12/05 17:56:13 [{nginx_level}] 1#1: something happened"
        line = json.loads(door_logs.json_line(door_logs.ERROR_TAG, text))
        assert (line["level"], line["message"]) == (level, "something happened")
        assert "connection" not in line  # a line about no connection has no *N


def test_an_access_line_is_passed_on_as_the_object_nginx_wrote():
    line = json.loads(door_logs.json_line(door_logs.ACCESS_TAG, ACCESS))
    assert line == json.loads(ACCESS)
    layer = json.loads(door_logs.json_line(door_logs.LAYER_ERROR_TAG, ERROR))
    assert layer["logger"] == "door.layer"  # the followed layer's lines are told apart


def test_whatever_arrives_is_still_one_json_object_on_one_line():
    cut = ACCESS[:50]  # a datagram nginx could not send whole
    no_date = "2026/13/45 99:99:99 [error] 1#1: *1 not a date"  # anyone who can write to the socket
    cases = [(door_logs.ACCESS_TAG, cut), (door_logs.REFUSED_TAG, "[1, 2]"), (door_logs.ERROR_TAG, "x\ny")]
    nested = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError, not a ValueError
    huge = "2026/12/05 17:56:13 [error] 1#1: *" + "9" * 5000 + " a connection number no int takes"
    cases += [(door_logs.ACCESS_TAG, nested), (door_logs.ACCESS_TAG, '{"a": NaN}')]
    line = json.loads(door_logs.json_line(door_logs.ERROR_TAG, huge))
    assert "connection" not in line and line["message"].endswith("...")  # no number nginx gives, and cut
    for tag, text in [*cases, (door_logs.ERROR_TAG, no_date)]:
        out = door_logs.json_line(tag, text)
        assert "\n" not in out
        line = json.loads(out)
        assert line["logger"] == "door" and line["message"] and line["level"] == "WARNING" and line["time"]
        assert len(line["message"]) <= door_logs.MAX_MESSAGE + 3  # cut, "..." marking the cut


def test_a_door_in_a_container_names_no_log_file_and_a_local_one_no_socket():
    files = door_logs.destinations(None)
    assert all("logs/" in value and "syslog:" not in value for value in files.values())
    container = door_logs.destinations(SOCKET)
    assert all(f"syslog:server=unix:{SOCKET},nohostname" in value for value in container.values())
    assert not any("logs/" in value for value in container.values())
    # nginx's own file error log, which it keeps whatever the config says, is named and takes emergencies only
    assert container["main_error_log"].endswith("\nerror_log /dev/null emerg;")


def test_the_rendered_configs_of_a_container_door_write_no_file():
    settings = ops_door.DoorSettings(
        None,
        ("palindrome",),
        ("k" * 32,),
        None,
        65536,
        followed=Path("/door"),
        telemetry_socket=SOCKET,
        stdout_logs=True,
    )
    conf, _ = ops_door.render(settings)
    layer = ops_door.render_follow(settings)
    for text in (conf, layer):
        directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in directives if "logs/" in line]
    assert conf.count(f"tag={door_logs.ACCESS_TAG} door if=$door_logs;") == 1
    assert f"tag={door_logs.REFUSED_TAG} door_connections" in conf and f"tag={door_logs.LAYER_ERROR_TAG}" in layer
