"""The door's follower without Docker: which replicas it calls ready, and the files it gives nginx."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading

import pytest

from deploy.image import door_context
from ops import door as ops_door
from ops import follow

KEY = "k" * 32
SETTINGS = follow.Settings(service="replica", rest_port=8080, grpc_port=7070, ready_port=8083)


def test_ready_replicas_are_those_answering_200():
    follower = follow.Follower()
    assert follower.update({"10.0.0.2": True, "10.0.0.3": False}) == ["10.0.0.2"]
    assert follower.update({"10.0.0.2": True, "10.0.0.3": True}) == ["10.0.0.2", "10.0.0.3"]


def test_a_refusal_or_a_503_counts_at_once_a_silence_only_when_repeated():
    follower = follow.Follower()
    follower.update({"a": True, "b": True})
    assert follower.update({"a": False, "b": None}) == ["b"]  # a said not ready (draining); b was only slow
    assert follower.update({"a": False, "b": None}) == []  # b missed MISSES_TO_DROP checks in a row
    assert follower.update({"a": True, "b": True}) == ["a", "b"]  # and comes back with its first 200


def test_a_replica_docker_no_longer_resolves_is_forgotten():
    follower = follow.Follower()
    follower.update({"a": True, "b": True})
    assert follower.update({"b": True}) == ["b"]  # a was killed: Docker's DNS dropped it
    assert follower.update({"a": None, "b": True}) == ["b"]  # a is back, silent: not ready until it says so


def test_a_new_silent_address_is_not_ready():
    assert follow.Follower().update({"a": None}) == []


def test_the_upstream_files_list_ready_replicas_or_one_server_marked_down():
    files = ops_door.upstream_includes([SETTINGS.replica("10.0.0.2"), SETTINGS.replica("10.0.0.3")])
    assert sorted(files) == ["grpc.conf", "ready.conf", "rest.conf"]
    assert re.findall(r"server (\S+) max_fails", files["rest.conf"]) == ["10.0.0.2:8080", "10.0.0.3:8080"]
    assert re.findall(r"server (\S+) max_fails", files["grpc.conf"]) == ["10.0.0.2:7070", "10.0.0.3:7070"]
    assert re.findall(r"server (\S+) max_fails", files["ready.conf"]) == ["10.0.0.2:8083", "10.0.0.3:8083"]
    for text in ops_door.upstream_includes([]).values():
        assert text.strip() == f"server {ops_door.NO_SERVER} down;"


def test_a_followed_door_hands_everything_to_its_layer_which_includes_the_ready_replicas(tmp_path):
    followed = ops_door.DoorSettings(None, ("palindrome",), (KEY,), None, 65536, followed=tmp_path)
    conf = ops_door.render(followed)[0]
    layer = ops_door.render_follow(followed)
    for kind in ops_door.UPSTREAM_KINDS:
        block = re.search(rf"upstream torchserve_{kind} \{{(.*?)\}}", conf, re.S).group(1)
        assert re.findall(r"server (\S+);", block) == [f"unix:{tmp_path}/{ops_door.FOLLOWED_DIR}/{kind}.sock"]
        assert f"listen unix:{tmp_path}/{ops_door.FOLLOWED_DIR}/{kind}.sock" in layer
        block = re.search(rf"upstream replicas_{kind} \{{(.*?)\}}", layer, re.S).group(1)
        assert block.split("\n")[1].strip() == f"include {ops_door.FOLLOWED_DIR}/{kind}.conf;"
    # The door's keep-alive connections to the layer are retried when a reload closes one: only with `error`
    # in its next-upstream conditions and non_idempotent (predictions are POSTs).
    assert "proxy_next_upstream error http_404 http_502 http_503 http_504 non_idempotent;" in conf
    assert "keepalive 32;" in re.search(r"upstream torchserve_rest \{(.*?)\}", conf, re.S).group(1)
    with pytest.raises(ValueError):
        ops_door.DoorSettings((), ("palindrome",), (KEY,), None, 65536)  # no replica is a mistake, not "followed"
    with pytest.raises(ValueError):
        ops_door.DoorSettings(None, ("palindrome",), (KEY,), None, 65536)  # followed, but where are the sockets?
    with pytest.raises(ValueError, match="followed door"):  # a door with its replicas has no second layer
        ops_door.render_follow(ops_door.DoorSettings((SETTINGS.replica("10.0.0.2"),), ("palindrome",), (KEY,), None, 1))


def test_a_followed_doors_two_layers_meet_in_its_prefix_and_the_layer_is_sized_like_the_door(tmp_path):
    """compose's door: its stream layer hands connections to its HTTP layer in the prefix (/door in the container),
    whose stale sockets the follower removes before starting nginx (ops.follow.start_nginx); the followed layer
    has the door's capacity and answers with the door's own error bodies."""
    followed = ops_door.DoorSettings(None, ("palindrome",), (KEY,), None, 65536, followed=tmp_path)
    conf, layer = ops_door.render(followed)[0], ops_door.render_follow(followed)
    for kind, sock in ops_door.internal_sockets(tmp_path).items():
        assert sock.parent == tmp_path and sock.name == f"door-{kind}.sock"
    assert f"proxy_pass unix:{tmp_path}/door-rest.sock;" in conf and f"listen unix:{tmp_path}/door-rest.sock" in conf
    assert f"proxy_cache_path {tmp_path}/health-cache " in conf
    capacity = ops_door.CAPACITY
    assert f"worker_processes {capacity.workers};" in layer
    assert f"worker_connections {capacity.worker_connections};" in layer
    bodies = ops_door.answers(followed)
    assert f"return 503 '{bodies['unavailable']}\\n';" in layer and f"return 504 '{bodies['timeout']}\\n';" in layer


def test_the_follower_removes_the_sockets_a_killed_door_left_before_starting_nginx(tmp_path, monkeypatch):
    """A killed container leaves its unix sockets in the mounted prefix; nginx would not bind over them."""
    (tmp_path / ops_door.FOLLOWED_DIR).mkdir()
    stale = [*ops_door.followed_sockets(tmp_path).values(), *ops_door.internal_sockets(tmp_path).values()]
    for sock in stale:
        sock.write_text("")
    seen = []

    (tmp_path / ops_door.PID).write_text("12\n")  # a killed container's: the next nginx may get its PID again

    class Started:
        """nginx as Popen starts it: it binds its sockets and, once it handles signals, writes its PID."""

        def __init__(self, command):
            seen.append([sock.exists() for sock in stale] + [(tmp_path / ops_door.PID).exists()])
            self.pid = 12
            for sock in ops_door.followed_sockets(tmp_path).values():
                sock.write_text("")
            pid_file = follow.LAYER_PID if ops_door.FOLLOW_CONFIG in command else ops_door.PID
            (tmp_path / pid_file).write_text(f"{self.pid}\n")

        def poll(self):
            return None

    monkeypatch.setattr(follow.subprocess, "Popen", Started)
    monkeypatch.setattr(follow.door, "nginx_command", lambda runtime, config=ops_door.CONFIG: ["nginx", config])
    follow.start_nginx(tmp_path)
    assert seen[0] == [False] * (len(stale) + 1)  # all gone before the first nginx started, its stale PID too


def test_the_follower_waits_for_each_nginx_to_write_its_pid_and_says_which_did_not_start(tmp_path, monkeypatch, caplog):
    """nginx writes its PID file once it listens and handles signals: the follower's status (which make up waits
    on) came sooner, and a stop at once killed nginx by SIGQUIT (exit 131); a client's first request was refused."""
    started = []

    class Silent:
        """An nginx that never gets that far (its config refused at start, say), then exits."""

        def __init__(self, command):
            self.pid, self.polls = 4242, 0
            started.append(self)

        def poll(self):
            self.polls += 1
            return None if self.polls < 5 else 1

        def kill(self):
            pass

    monkeypatch.setattr(follow.subprocess, "Popen", Silent)
    monkeypatch.setattr(follow.door, "nginx_command", lambda runtime, config=ops_door.CONFIG: ["nginx", config])
    with pytest.raises(SystemExit):
        follow.start_nginx(tmp_path)
    assert "the followed layer did not start" in caplog.text  # a JSON line of the follower's, not bare text
    assert len(started) == 1 and started[0].polls >= 5  # waited, and never started the door in front of it


@pytest.mark.skipif(ops_door.missing_nginx() is not None, reason=str(ops_door.missing_nginx()))
@pytest.mark.parametrize("ready", [[], ["10.0.0.2", "10.0.0.3"]], ids=["none-ready", "two-ready"])
def test_nginx_accepts_a_followed_door_with_none_or_several_ready(tmp_path, ready):
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    followed = ops_door.DoorSettings(
        None, ("palindrome",), (KEY,), None, 65536, port=18090, grpc_port=17090, followed=tmp_path
    )
    conf, keys = ops_door.render(followed)
    ops_door.write_private(tmp_path / ops_door.CONFIG, conf)
    ops_door.write_private(tmp_path / ops_door.KEYS_INCLUDE, keys)
    (tmp_path / ops_door.FOLLOW_CONFIG).write_text(ops_door.render_follow(followed))
    follow.write_upstreams(tmp_path, [SETTINGS.replica(a) for a in ready])
    for config in (ops_door.CONFIG, ops_door.FOLLOW_CONFIG):
        check = ops_door.nginx(tmp_path, "-t", "-q", config=config)
        assert check.returncode == 0, check.stderr


class Readiness(http.server.BaseHTTPRequestHandler):
    """A port answering GET /ready with the status the test sets (the check's three outcomes need one)."""

    status = 200

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_check_tells_ready_not_ready_and_refused():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readiness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/ready"
    try:
        assert follow.check(url) is True
        Readiness.status = 503
        assert follow.check(url) is False
    finally:
        server.shutdown()
        server.server_close()
        Readiness.status = 200
    assert follow.check(url) is False  # nothing listens there now: refused, a definite no


def test_resolve_gives_every_ipv4_address_of_a_name_and_nothing_for_an_unknown_one():
    assert follow.resolve("localhost") == ["127.0.0.1"]
    assert follow.resolve("no-such-replica.invalid") == []


def test_a_check_without_an_answer_in_time_is_a_silence(monkeypatch):
    """Silence (a replica too busy to answer) is None, not a no: it drops a replica only when repeated."""
    listening = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel does), never answers
    monkeypatch.setattr(follow, "CHECK_TIMEOUT_S", 0.2)
    try:
        assert follow.check(f"http://127.0.0.1:{listening.getsockname()[1]}/ready") is None
    finally:
        listening.close()


def test_the_follower_runs_in_the_door_image_on_the_standard_library_alone(tmp_path):
    """The door's image has Debian's python3 and no package beside it, and only the files deploy/image.py
    stages for it: the follower must import from exactly those (-S: no site-packages)."""
    context = door_context(tmp_path / "door-context")
    run = subprocess.run(
        [sys.executable, "-S", "-c", "import ops.follow, ops.door"], cwd=context, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
