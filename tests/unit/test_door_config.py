"""The door's config as rendered from its one template, without a TorchServe behind it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from clients import base as client_base
from clients.errors import ServerError
from clients.grpc import GrpcClient
from digitlab import errors
from ops import door as ops_door
from ops import door_keys, door_nginx, door_render, door_tls, instance
from ops import door_metrics as ops_door_metrics

KEY = "k" * 32
REPLICAS = [
    ops_door.Replica(rest=f"10.0.0.{i}:8080", grpc=f"10.0.0.{i}:7070", ready=f"10.0.0.{i}:8083") for i in (1, 2)
]
MODELS = ["palindrome", "interpolate"]
MAX_BODY = 65536


TS_KEY_FILE = "/srv/ts/key_file.json"  # TorchServe's key_file.json, as nginx reads it


def settings(
    upstream_key_file: str | None = TS_KEY_FILE, keys=(KEY,), limits: ops_door.Limits = ops_door.LIMITS
) -> ops_door.DoorSettings:
    return ops_door.DoorSettings(REPLICAS, MODELS, keys, upstream_key_file, MAX_BODY, limits=limits)


def rendered(upstream_key_file: str | None = TS_KEY_FILE) -> str:
    return ops_door.render(settings(upstream_key_file))[0]


def test_every_replica_is_an_upstream_server_of_each_kind():
    conf = rendered()
    for name, field in (("rest", "rest"), ("grpc", "grpc"), ("ready", "ready")):
        block = re.search(rf"upstream torchserve_{name} \{{(.*?)\}}", conf, re.S).group(1)
        assert re.findall(r"server (\S+) max_fails", block) == [getattr(r, field) for r in REPLICAS]


def test_torchserve_gets_its_own_key_read_per_request_or_none_never_the_clients():
    with_key, without_key = rendered(), rendered(None)
    # REST's first try and gRPC read the key per request; REST's retry sends the key its wait read (a js_var).
    assert with_key.count("set_header Authorization $torchserve_authorization;") == 2
    assert with_key.count("proxy_set_header Authorization $torchserve_authorization_retry;") == 1
    assert f'js_var $torchserve_key_file "{TS_KEY_FILE}";' in with_key
    assert f'js_import torchserve_key from "{ops_door.TORCHSERVE_KEY_SCRIPT}";' in with_key
    assert "js_set $torchserve_authorization torchserve_key.authorization;" in with_key
    assert "js_var $torchserve_authorization_retry;" in with_key
    assert f"load_module {ops_door.DEBIAN_JS_MODULE};" in with_key
    # Without a key file: no njs at all, no Authorization upstream (REST twice, gRPC, the readiness check), and
    # nothing intercepted: every 400 is the handler's.
    assert without_key.count('set_header Authorization "";') == 4
    assert not re.search(r"^\s*js_", without_key, re.M) and "ngx_http_js_module" not in without_key
    assert "proxy_intercept_errors" not in without_key
    assert KEY not in with_key  # client keys live only in keys.conf


def test_torchserves_key_is_read_by_a_script_that_sends_the_current_key():
    script = ops_door.TORCHSERVE_KEY_SCRIPT.read_text()
    assert "r.variables.torchserve_key_file" in script and "readFileSync" in script
    assert "JSON.parse(text).inference.key" in script and "'Bearer ' + key" in script
    # The retry waits (a timer) while the file holds no key or the refused one, after TorchServe's own refusal.
    assert "r.variables.upstream_http_x_model_version" in script and "setTimeout(again, WAIT_STEP_MS)" in script
    assert "r.variables.torchserve_authorization_retry = current;" in script
    assert "r.internalRedirect('@retry_with_current_key');" in script
    assert "export default {authorization, retry};" in script


def test_a_refused_rest_prediction_is_asked_again_once_with_the_key_read_anew():
    """TorchServe refuses a key it has just renewed with 400: @predict intercepts 400 (and only the door's own
    codes besides), @retry_current_key waits for the key file if need be, @retry_with_current_key asks again with
    intercept off, so the handler's own 400 comes back."""
    conf = rendered()
    route = conf[conf.index("location ~ ^/predictions/") :].split("\n        }", 1)[0]
    assert "try_files /nonexistent @predict;" in route and "proxy_pass" not in route
    predict = conf[conf.index("location @predict {") :].split("\n        }", 1)[0]
    wait = conf[conf.index("location @retry_current_key {") :].split("\n        }", 1)[0]
    retry = conf[conf.index("location @retry_with_current_key {") :].split("\n        }", 1)[0]
    assert "proxy_intercept_errors on;" in predict and "proxy_intercept_errors" not in retry
    assert re.findall(r"error_page ([^;]+);", predict) == [
        "400 = @retry_current_key",
        "413 @too_large",
        "502 =503 @unavailable",
        "504 @timeout",
    ]
    assert "js_content torchserve_key.retry;" in wait
    assert re.findall(r"error_page ([^;]+);", retry) == ["413 @too_large", "502 =503 @unavailable", "504 @timeout"]
    for block in (predict, retry):
        assert "proxy_pass http://torchserve_rest/predictions/$model;" in block
        assert "proxy_next_upstream error http_404 http_502 http_503 http_504 non_idempotent;" in block


def test_the_workers_run_as_the_key_files_owner_only_when_told():
    assert "\nuser " not in rendered()
    conf = ops_door.render(dataclasses.replace(settings(), worker_user="ts ts"))[0]
    assert "\nuser ts ts;" in conf
    with pytest.raises(ValueError, match="user group"):
        dataclasses.replace(settings(), worker_user="ts; include /etc/passwd")


def test_client_keys_become_one_exact_map_entry_each_to_the_id_of_their_client():
    keys = ops_door.render(settings(None, keys=[KEY, "n" * 32, "alice a.b+c" + "d" * 16]))[1]
    assert keys.splitlines() == [
        f'    "~^(?i:bearer) +{KEY}$" {ops_door.key_id(KEY)};',
        f'    "~^(?i:bearer) +{"n" * 32}$" {ops_door.key_id("n" * 32)};',
        f'    "~^(?i:bearer) +a\\.b\\+c{"d" * 16}$" alice;',  # the regex's own characters escaped
    ]
    assert KEY not in rendered()  # the keys live in keys.conf only (a Secret in Kubernetes)


@pytest.mark.parametrize("key", [KEY, "Ab0._~+/=-" + "xY" * 8])
def test_a_key_matches_exactly_only_the_schemes_case_is_free(key):
    """nginx compares a map's plain strings without regard to case: `Bearer ABC...` was accepted for `abc...`.
    Each entry is a case-sensitive PCRE (the same syntax as Python's re for these): only the scheme, `bearer`,
    may change case (RFC 9110), never a letter of the key, and nothing may come before or after it."""
    pattern = re.compile(door_keys.key_pattern(key).removeprefix("~"))
    for accepted in (f"Bearer {key}", f"bearer {key}", f"BEARER {key}", f"Bearer  {key}"):
        assert pattern.fullmatch(accepted), accepted
    flipped = [key[:i] + key[i].swapcase() + key[i + 1 :] for i, c in enumerate(key) if c.isalpha()]
    assert flipped
    for refused in [*(f"Bearer {k}" for k in flipped), f"Bearer {key}x", f"Bearer x{key}", key, f"Basic {key}"]:
        assert not pattern.search(refused), refused
    assert not re.compile(door_keys.key_pattern("a.b" + "c" * 16).removeprefix("~")).search("Bearer aXb" + "c" * 16)


def test_a_key_file_line_is_a_key_or_an_id_and_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv(ops_door.API_KEY_ENV, raising=False)
    key_file = tmp_path / "api_keys"
    key_file.write_text(f"{KEY}\nbob {'n' * 32}\n\n")
    assert ops_door.read_client_keys(key_file) == [
        ops_door.ClientKey(ops_door.key_id(KEY), KEY),
        ops_door.ClientKey("bob", "n" * 32),
    ]
    assert ops_door.key_id(KEY) == "k-" + hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert ops_door.client_key(key_file) == "n" * 32  # what a client sends: the newest line's key, not its id
    for bad in (f"bob {KEY} extra", f"b/ob {KEY}", f"{'x' * 33} {KEY}", "bob short"):
        key_file.write_text(bad + "\n")
        with pytest.raises(ValueError):
            ops_door.read_client_keys(key_file)
    key_file.write_text(f"bob {KEY}\nbob {'n' * 32}\n")
    with pytest.raises(ValueError, match="same id: bob"):
        ops_door.read_client_keys(key_file)


def test_only_the_served_models_are_routes():
    assert re.search(r"location ~ \^/predictions/\(\?<model>palindrome\|interpolate\)\$", rendered())


@pytest.mark.parametrize("key", ["short", 'with"quote-and-more-than-16', "with space and more than 16", "x" * 101])
def test_keys_that_are_weak_or_would_break_the_config_are_refused(key):
    with pytest.raises(ValueError):
        settings(None, keys=[key])


def test_torchserves_key_file_must_be_a_plain_absolute_path_and_its_key_is_never_taken():
    for path in ("relative/key_file.json", '/with"quote', "/with space", "/with$var", "/with{brace}"):
        with pytest.raises(ValueError, match="absolute path"):
            settings(path)
    with pytest.raises(ValueError, match="upstream_key_file"):
        ops_door.DoorSettings(REPLICAS, MODELS, (KEY,), None, MAX_BODY, upstream_key="ts-key-1")
    assert ops_door.DoorSettings(REPLICAS, MODELS, (KEY,), None, MAX_BODY, upstream_key=None) == settings(None)


def test_settings_are_one_immutable_value_whatever_sequences_they_were_given():
    given = settings(keys=[KEY])
    assert (type(given.replicas), type(given.models), type(given.client_keys)) == (tuple, tuple, tuple)
    assert given == ops_door.DoorSettings(tuple(REPLICAS), tuple(MODELS), (KEY,), TS_KEY_FILE, MAX_BODY)
    with pytest.raises(AttributeError):
        given.port = 1  # frozen
    for empty in ({"replicas": []}, {"models": []}, {"client_keys": []}):
        with pytest.raises(ValueError, match="at least one replica, one model and one client key"):
            ops_door.DoorSettings(**{**vars(given), **empty})


def test_a_saved_door_renders_with_the_keys_its_files_hold_now(tmp_path):
    key_file = tmp_path / "api_keys"
    key_file.write_text(KEY + "\n")
    door = local_door(key_file)
    assert ops_door.Door.from_json(door.to_json()) == door
    assert door.settings().client_keys == (ops_door.ClientKey(ops_door.key_id(KEY), KEY),)
    assert door.settings().upstream_key_file is None
    key_file.write_text(KEY + "\n" + "n" * 32 + "\n")  # a rotation: the new key is added
    assert door.settings(ops_door.CONTAINER_WEB_ROOT) == dataclasses.replace(
        settings(None, keys=[KEY, "n" * 32]),
        host="127.0.0.1",
        port=1,
        grpc_port=2,
        web_root=ops_door.CONTAINER_WEB_ROOT,
    )


def test_limits_come_from_the_environment_by_documented_names():
    assert ops_door.Limits.from_env({}) == ops_door.LIMITS
    env = {"DIGITLAB_LIMIT_RATE": "400", "DIGITLAB_LIMIT_GRPC_IN_FLIGHT": "8", "DIGITLAB_LIMIT_READ_TIMEOUT_S": "90"}
    limits = ops_door.Limits.from_env(env)
    assert (limits.rate, limits.grpc_in_flight, limits.read_timeout_s, limits.burst) == (400, 8, 90, 100)
    conf = ops_door.render(settings(None, limits=limits))[0]
    assert "rate=400r/s" in conf and "limit_conn grpc_in_flight 8;" in conf and "proxy_read_timeout 90s;" in conf
    assert [ops_door.limit_env(name) for name in ops_door.LIMIT_FIELDS] == [
        "DIGITLAB_LIMIT_RATE",
        "DIGITLAB_LIMIT_BURST",
        "DIGITLAB_LIMIT_HEAVY_RATE",
        "DIGITLAB_LIMIT_HEAVY_BURST",
        "DIGITLAB_LIMIT_IN_FLIGHT",
        "DIGITLAB_LIMIT_HEAVY_IN_FLIGHT",
        "DIGITLAB_LIMIT_GRPC_IN_FLIGHT",
        "DIGITLAB_LIMIT_READ_TIMEOUT_S",
        "DIGITLAB_LIMIT_CONNECTIONS",
        "DIGITLAB_LIMIT_LOCAL_RATE",
        "DIGITLAB_LIMIT_LOCAL_BURST",
    ]
    conf = ops_door.render(settings(None, limits=ops_door.Limits.from_env({"DIGITLAB_LIMIT_CONNECTIONS": "9"})))[0]
    assert "limit_conn connections 9;" in conf


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DIGITLAB_LIMIT_RATE": "0"}, "DIGITLAB_LIMIT_RATE"),
        ({"DIGITLAB_LIMIT_BURST": "-5"}, "DIGITLAB_LIMIT_BURST"),
        ({"DIGITLAB_LIMIT_IN_FLIGHT": "1e3"}, "DIGITLAB_LIMIT_IN_FLIGHT"),
        ({"DIGITLAB_LIMIT_HEAVY_RATE": "5; include /etc/passwd"}, "DIGITLAB_LIMIT_HEAVY_RATE"),
        ({"DIGITLAB_LIMITS": "maybe"}, "DIGITLAB_LIMITS"),
    ],
)
def test_a_bad_limit_is_refused_by_its_name(env, named):
    with pytest.raises(ValueError, match=named):
        ops_door.Limits.from_env(env)


def server_blocks(conf: str) -> list[str]:
    """The HTTP layer's server blocks, in order."""
    return re.findall(r"^    server \{\n.*?^    \}\n", conf.split("\nhttp {", 1)[1], re.M | re.S)


def test_trusted_proxies_come_from_the_environment_and_nothing_else_is_trusted():
    plain = rendered()
    assert "X-Forwarded-For;" not in plain and "door_trusted_proxy" not in plain
    assert re.findall(r"set_real_ip_from (\S+);", plain) == ["unix:", "unix:"]  # the stream layer, REST and gRPC
    assert plain.count("real_ip_header proxy_protocol;") == 2
    limits = ops_door.Limits.from_env({"DIGITLAB_TRUSTED_PROXIES": "172.17.0.1, 10.0.0.0/8"})
    assert limits.trusted_proxies == ("172.17.0.1", "10.0.0.0/8")
    conf = ops_door.render(settings(None, limits=limits))[0]
    # The stream layer: a trusted proxy's connections are not counted against one address, and go to servers of
    # their own, which alone read X-Forwarded-For (from the right, trusted hops skipped).
    stream = conf.split("\nstream {", 1)[1].split("\nhttp {", 1)[0]
    assert re.findall(r"^\s+(\S+) 1;$", stream.split("geo $door_trusted_proxy {", 1)[1].split("}")[0], re.M) == [
        "172.17.0.1/32",
        "10.0.0.0/8",
    ]
    assert 'map $door_trusted_proxy $door_peer {\n        1 "";' in stream
    assert "proxy_pass $door_rest_socket;" in stream and "proxy_pass $door_grpc_socket;" in stream
    blocks = server_blocks(conf)
    assert len(blocks) == 4  # REST and gRPC, each for everyone and for trusted proxies
    for block in blocks:
        proxied = "-proxied.sock proxy_protocol" in block
        assert re.findall(r"set_real_ip_from (\S+);", block) == (
            ["unix:", "172.17.0.1/32", "10.0.0.0/8"] if proxied else ["unix:"]
        )
        assert ("real_ip_header X-Forwarded-For;" in block) == proxied == ("real_ip_recursive on;" in block)
        assert ("real_ip_header proxy_protocol;" in block) != proxied
    for bad in ("everyone", "10.0.0.0/33", "1.2.3.4; include /etc/passwd"):
        with pytest.raises(ValueError, match="DIGITLAB_TRUSTED_PROXIES"):
            ops_door.Limits.from_env({"DIGITLAB_TRUSTED_PROXIES": bad})


def test_limits_off_leaves_every_per_client_limit_out_of_the_routes():
    off = ops_door.Limits.from_env({"DIGITLAB_LIMITS": "off"})
    conf = ops_door.render(settings(None, limits=off))[0]
    assert not re.search(r"^\s*limit_(req|conn) ", conf, re.M)  # the zones stay defined, nothing uses them
    # The REST and the gRPC route, the page's two locations and the door's own answers on both ports.
    assert conf.count("no per-client limits: DIGITLAB_LIMITS=off") == 6
    assert "# no cap per address: DIGITLAB_LIMITS=off" in conf
    on = rendered()
    # The stream layer's cap; REST's 4 and gRPC's 3 (gRPC calls count as heavy too); the local budget in 4 places.
    assert len(re.findall(r"^\s*limit_(req|conn) ", on, re.M)) == 12


def test_a_template_field_without_a_value_is_an_error():
    with pytest.raises(KeyError, match="missing_one"):
        door_render.fill("a {{ present }} and {{ missing_one }}", {"present": 1})


def local_door(client_key_file, limits: ops_door.Limits = ops_door.LIMITS) -> ops_door.Door:
    """A door for REPLICAS on loopback, its ports never opened: for rendering and nginx -t."""
    return ops_door.Door(
        host="127.0.0.1",
        port=1,
        grpc_port=2,
        replicas=REPLICAS,
        models=MODELS,
        torchserve_key_file=None,
        client_key_file=str(client_key_file),
        max_body_bytes=MAX_BODY,
        limits=limits,
    )


def test_without_nginx_the_door_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(door_nginx, "nginx_binary", lambda: None)
    door = local_door(tmp_path / "keys")
    with pytest.raises(SystemExit, match="apt-get install nginx-light"):
        ops_door.start(tmp_path, door)


@pytest.mark.skipif(ops_door.missing_nginx() is not None, reason=str(ops_door.missing_nginx()))
@pytest.mark.parametrize(
    "limits",
    [ops_door.LIMITS, ops_door.Limits(per_client=False), ops_door.Limits(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))],
    ids=["limits", "limits-off", "trusted-proxies"],
)
def test_nginx_accepts_a_door_for_several_replicas(tmp_path, limits):
    door = local_door(tmp_path / "api_keys", limits)
    (tmp_path / "api_keys").write_text(KEY + "\n")
    try:
        door_nginx.install_config(tmp_path, door)  # runs nginx -t; raises when nginx refuses it
        assert (tmp_path / ops_door.CONFIG).stat().st_mode & 0o777 == 0o600
        shared = door_nginx.shared_folder_path(tmp_path)
        assert shared.stat().st_mode & 0o777 == 0o711  # every worker traverses it, nobody else lists it
        assert f"unix:{shared}/door-rest.sock;" in (tmp_path / ops_door.CONFIG).read_text()
    finally:  # what start makes in the system's temp directory, and stop removes
        shutil.rmtree(door_nginx.shared_folder_path(tmp_path), ignore_errors=True)
        shutil.rmtree(door_nginx.published_page_path(tmp_path), ignore_errors=True)


def test_the_try_it_page_is_served_from_web_and_only_by_get():
    conf = rendered()
    for location in ("location = / {", "location /web/ {"):
        block = conf[conf.index(location) :].split("\n        }", 1)[0]
        assert str(ops_door.WEB_ROOT.resolve()) in block and "if ($request_method !~ ^(GET|HEAD)$)" in block
        assert "proxy_pass" not in block  # nothing of the page reaches TorchServe


def test_the_page_link_carries_the_key_in_the_fragment_only():
    assert ops_door.page_link("http://127.0.0.1:8090", KEY) == f"http://127.0.0.1:8090/#key={KEY}"


def test_the_page_is_served_from_a_copy_every_nginx_worker_can_read(tmp_path):
    """Workers of a root-started nginx run as nobody: web/ inside a private checkout (a clone in
    `mktemp -d`, 0700) answered 404. The door serves a world-readable copy outside it."""
    private = tmp_path / "checkout"
    private.mkdir(mode=0o700)
    page = door_nginx.published_page(private / ".gateway")
    try:
        assert not page.is_relative_to(tmp_path)
        for path in (page, page / "index.html"):
            assert path.stat().st_mode & 0o005 == 0o005 if path.is_dir() else path.stat().st_mode & 0o004
        for parent in page.parents:
            assert parent.stat().st_mode & 0o001, parent  # others may traverse every ancestor
        assert sorted(p.name for p in page.iterdir()) == sorted(p.name for p in ops_door.WEB_ROOT.iterdir())
        (tmp_path / "keys").write_text(KEY + "\n")
        conf, _ = ops_door.render(local_door(tmp_path / "keys").settings(page))
        assert f'root "{page}";' in conf
    finally:
        shutil.rmtree(page)


def test_render_prints_the_config_that_start_would_run(tmp_path, capsys):
    (tmp_path / "api_keys").write_text(KEY + "\n")
    ops_door.main(["render", "--runtime", str(tmp_path), "--torchserve-workdir", str(tmp_path), "--models", "sample"])
    options = {
        "host": ops_door.DEFAULT_HOST,
        "port": ops_door.DEFAULT_PORT,
        "grpc_port": ops_door.DEFAULT_GRPC_PORT,
        "config": instance.DEFAULT_CONFIG,
        "torchserve_workdir": tmp_path,
        "key_file": tmp_path / "api_keys",
    }
    door = ops_door.local_door(**options, models=["sample"], metrics=f"127.0.0.1:{ops_door_metrics.METRICS_PORT}")
    assert door.torchserve_key_file is None  # no key_file.json in that working directory: none sent upstream
    printed = capsys.readouterr().out
    assert printed == ops_door.render(ops_door.local_settings(tmp_path, door, prepare=False))[0] + "\n"
    assert str(door_nginx.shared_folder_path(tmp_path)) in printed  # where start puts the sockets
    assert ops_door.local_door(**options).models == instance.archives()  # no --models: the archives there are


# -- the stream layer, capacity, the door's own answers, logs, /health ------------------------------------


def test_clients_meet_the_stream_layer_which_caps_connections_per_address_before_any_request():
    conf = ops_door.render(dataclasses.replace(settings(), shared_folder=Path("/run/door")))[0]
    stream = conf.split("\nstream {", 1)[1].split("\nhttp {", 1)[0]
    # The public ports are the stream layer's; it hands each connection, with its address, to a unix socket.
    assert re.findall(r"listen (\S+);", stream) == ["127.0.0.1:8090", "127.0.0.1:7090"]
    handed = ["unix:/run/door/door-rest.sock", "unix:/run/door/door-grpc.sock"]
    assert re.findall(r"proxy_pass (\S+);", stream) == handed
    assert "proxy_protocol on;" in stream
    assert "limit_conn_zone $door_peer zone=connections:10m;" in stream
    assert f"limit_conn connections {ops_door.LIMITS.connections};" in stream
    assert "limit_conn_log_level info;" in stream  # below the error log's warn: no line per refused connection
    # The HTTP layer listens on those sockets only, and nowhere else.
    http = conf.split("\nhttp {", 1)[1]
    assert re.findall(r"^\s+listen (.*);$", http, re.M) == [
        "unix:/run/door/door-rest.sock proxy_protocol",
        "unix:/run/door/door-grpc.sock proxy_protocol http2",
    ]
    assert "proxy_cache_path /run/door/health-cache " in http


def test_the_door_is_sized_for_the_machine_and_loads_the_stream_module_it_has():
    conf = rendered()
    assert conf.startswith("# The door") and f"load_module {ops_door.DEBIAN_STREAM_MODULE};" in conf
    capacity = ops_door.CAPACITY
    assert "worker_processes auto;" in conf
    assert f"worker_connections {capacity.worker_connections};" in conf
    assert f"worker_rlimit_nofile {capacity.worker_rlimit_nofile};" in conf
    assert capacity.worker_rlimit_nofile >= 2 * capacity.worker_connections  # a connection is a descriptor
    assert capacity.worker_connections // 3 >= 32 * ops_door.LIMITS.connections  # 3 per client connection
    built_in = ops_door.render(dataclasses.replace(settings(), stream_module=None, js_module=None))[0]
    assert "load_module" not in built_in
    two = ops_door.render(dataclasses.replace(settings(), capacity=ops_door.Capacity(workers="2")))[0]
    assert "worker_processes 2;" in two


def fake_nginx(tmp_path: Path, options: str) -> str:
    """An `nginx` that only answers -V, with these build options."""
    binary = tmp_path / "nginx"
    binary.write_text(f"#!/bin/sh\necho 'configure arguments: --prefix=/x {options}' >&2\n")
    binary.chmod(0o755)
    door_nginx.stream_module.cache_clear()
    return str(binary)


def test_the_stream_module_is_found_where_the_build_put_it(tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    dynamic = f"--modules-path={modules} --with-stream=dynamic --with-http_v2_module"
    assert door_nginx.stream_module(fake_nginx(tmp_path, dynamic)) == (False, str(modules / "ngx_stream_module.so"))
    (modules / "ngx_stream_module.so").write_text("")
    assert door_nginx.stream_module(fake_nginx(tmp_path, dynamic)) == (True, str(modules / "ngx_stream_module.so"))
    assert door_nginx.stream_module(fake_nginx(tmp_path, "--with-stream --with-http_v2_module")) == (True, None)
    assert door_nginx.stream_module(fake_nginx(tmp_path, "--with-http_v2_module")) == (False, None)
    door_nginx.stream_module.cache_clear()


def test_without_the_stream_module_the_door_says_what_to_install(monkeypatch):
    monkeypatch.setattr(door_nginx, "nginx_binary", lambda: "/usr/sbin/nginx")
    monkeypatch.setattr(door_nginx, "stream_module", lambda binary: (False, None))
    assert "libnginx-mod-stream" in ops_door.missing_nginx()
    with pytest.raises(SystemExit, match="libnginx-mod-stream"):
        door_nginx.local_stream_module()


def test_every_answer_of_the_door_is_the_one_error_body():
    """Rendered by digitlab/errors.py's error_json, the one error body (the door's image carries errors.py)."""
    bodies = ops_door.answers(settings())
    conf = rendered()
    statuses = {}
    for field, quoted in bodies.items():
        body = json.loads(quoted.replace("\\'", "'").replace("\\\\", "\\"))
        assert quoted == door_render.quoted_body(body["code"], body["type"], body["message"])
        assert json.dumps(body, separators=(", ", ": ")) == errors.error_json(*body.values())
        assert tuple(body) == (*errors.FIELDS, errors.REQUEST_ID) and body["request_id"] == "$door_request_id"
        statuses[field] = body["code"]
        assert f" '{quoted}\\n';" in conf
    assert statuses["bad_request"] == 400 and statuses["headers_too_large"] == 431 and statuses["uri_too_long"] == 414
    # None is typed in the templates.
    for template in (door_render.TEMPLATE, door_render.FOLLOW_TEMPLATE):
        assert '{"code": ' not in template.read_text()
    with pytest.raises(ValueError, match="may not hold"):
        door_render.quoted_body(400, "BadRequest", "costs $1")
    expected = r"""{"code": 400, "type": "X", "message": "it\'s a \\\\ path", "request_id": "$door_request_id"}"""
    assert door_render.quoted_body(400, "X", "it's a \\ path") == expected


def test_what_the_door_answers_itself_goes_through_one_budget_per_client():
    conf = rendered()
    for block in server_blocks(conf):
        answers = block[block.index("location ~ ^/_door/") :].split("\n        }", 1)[0]
        assert "internal;" in answers and "limit_req zone=local burst=40 nodelay;" in answers
        assert "limit_req_log_level info;" in answers  # a refusal is not an error line
        assert "try_files /nonexistent @$door_answer;" in answers
        assert re.search(r"error_page 401 /_door/", block) and re.search(r"error_page 404 405 /_door/", block)
    rest = server_blocks(conf)[0]
    for code, answer in (("400", "bad_request"), ("414", "uri_too_long"), ("494 =431", "headers_too_large")):
        assert f"error_page {code} /_door/{answer};" in rest
        assert f"location @{answer} {{" in rest
    assert "recursive_error_pages on;" in rest  # a refusal over the budget is answered by @too_many_local
    assert "limit_req_zone $door_client zone=local:10m rate=20r/s;" in conf


def test_the_door_logs_a_bounded_line_and_samples_refusals():
    conf = rendered()
    log_format = conf[conf.index("log_format door ") :].split(";", 1)[0]
    assert '"$door_request"' in log_format and "$request " not in log_format and '$request"' not in log_format
    assert '"~^(?<door_request_head>.{120}).{4,}" "$door_request_head...";' in conf
    assert "access_log logs/access.log door if=$door_logs buffer=32k flush=1s;" in conf
    logs = conf[conf.index("$door_logs {") :].split("}", 1)[0]
    assert '"~^200:" 0;' in logs and '"~REJECTED.*:0$" 0;' in logs and '"~^\\d+:/health:.*:0$" 0;' in logs
    sample = re.compile(r"00$")  # $door_sample: one request id in 256 ends so
    assert sample.pattern in conf.split("map $request_id $door_sample {", 1)[1].split("}", 1)[0]


def test_health_answers_from_the_last_check_for_a_second_and_asks_once():
    conf = rendered()
    ready = conf[conf.index("location = /_ready {") :].split("\n        }", 1)[0]
    for line in (
        "proxy_cache health;",
        "proxy_cache_key ready;",
        "proxy_cache_valid 200 503 1s;",
        "proxy_cache_lock on;",
        "proxy_cache_use_stale updating;",
    ):
        assert line in ready
    assert "error" not in ready.split("proxy_cache_use_stale", 1)[1].split(";", 1)[0]  # a failed check is not kept


def test_the_njs_module_is_found_where_the_build_put_it(tmp_path, monkeypatch):
    modules = tmp_path / "modules"
    modules.mkdir()
    debian = f"--modules-path={modules} --with-stream=dynamic"
    door_nginx.js_module.cache_clear()
    assert door_nginx.js_module(fake_nginx(tmp_path, debian)) == (False, str(modules / "ngx_http_js_module.so"))
    (modules / "ngx_http_js_module.so").write_text("")
    door_nginx.js_module.cache_clear()
    assert door_nginx.js_module(fake_nginx(tmp_path, debian)) == (True, str(modules / "ngx_http_js_module.so"))
    door_nginx.js_module.cache_clear()
    assert door_nginx.js_module(fake_nginx(tmp_path, "--with-stream --add-module=/build/njs-0.8.4/nginx")) == (
        True,
        None,
    )
    door_nginx.js_module.cache_clear()
    door_nginx.stream_module.cache_clear()
    # Without njs: the door says what to install, and refuses to start in front of a TorchServe with a key.
    monkeypatch.setattr(door_nginx, "nginx_binary", lambda: "/usr/sbin/nginx")
    monkeypatch.setattr(door_nginx, "stream_module", lambda binary: (True, None))
    monkeypatch.setattr(door_nginx, "js_module", lambda binary: (False, "/x/ngx_http_js_module.so"))
    assert "libnginx-mod-http-js" in ops_door.missing_nginx()
    (tmp_path / "key_file.json").write_text("{}")
    door = dataclasses.replace(local_door(tmp_path / "keys"), torchserve_key_file=str(tmp_path / "key_file.json"))
    with pytest.raises(SystemExit, match="libnginx-mod-http-js"):
        door_nginx.local_js_module(door)
    assert door_nginx.local_js_module(local_door(tmp_path / "keys")) is None  # no key to read: no njs needed


class ScriptedGrpc(GrpcClient):
    """A gRPC client whose calls answer from a script (an exception is raised), recording the key of each try."""

    def __init__(self, script, **kwargs):
        super().__init__("127.0.0.1:9", **kwargs)
        self.script, self.keys = list(script), []

    def _bytes(self, model, payload, key, accept):
        self.keys.append(key)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def test_a_grpc_call_torchserve_refused_behind_the_door_is_retried_once_after_a_moment(monkeypatch):
    """PERMISSION_DENIED is TorchServe refusing the key the door sent (it renewed it a moment before the door read
    it): one retry, the same client key, after KEY_REFUSAL_RETRY_S. The door's own refusal (UNAUTHENTICATED) of a
    key given explicitly is final, and so is a second PERMISSION_DENIED."""
    waited: list[float] = []
    monkeypatch.setattr(client_base.time, "sleep", waited.append)
    answer = json.dumps({"digit": 1}).encode()
    denied = ServerError("PERMISSION_DENIED", "Token Authorization failed")
    with ScriptedGrpc([denied, answer], token=KEY) as client:
        assert client.predict("palindrome", {})["digit"] == 1
        assert client.keys == [KEY, KEY] and waited == [client_base.KEY_REFUSAL_RETRY_S]
    with ScriptedGrpc([denied, denied, answer], token=KEY) as client, pytest.raises(ServerError):
        client.predict("palindrome", {})
    with ScriptedGrpc([ServerError("UNAUTHENTICATED", "wrong key"), answer], token=KEY) as client:
        with pytest.raises(ServerError, match="wrong key"):
            client.predict("palindrome", {})
        assert client.keys == [KEY]
    assert waited == [client_base.KEY_REFUSAL_RETRY_S] * 2


# -- TLS ----------------------------------------------------------------------------------------------------

TLS = ops_door.TlsFiles(cert="/srv/tls/cert.pem", key="/srv/tls/key.pem")


def test_a_tls_door_speaks_tls_on_both_ports_with_mozillas_intermediate_profile():
    plain, conf = rendered(), ops_door.render(dataclasses.replace(settings(), tls=TLS))[0]
    http = conf.split("\nhttp {", 1)[1]
    # The stream layer passes the bytes on; TLS ends in the HTTP layer, REST with HTTP/2 and HTTP/1.1 (ALPN).
    assert re.findall(r"^\s+listen (.*);$", http, re.M) == [
        f"unix:{ops_door.CONTAINER_PREFIX}/door-rest.sock proxy_protocol ssl http2",
        f"unix:{ops_door.CONTAINER_PREFIX}/door-grpc.sock proxy_protocol ssl http2",
    ]
    for line in (
        'ssl_certificate "/srv/tls/cert.pem";',
        'ssl_certificate_key "/srv/tls/key.pem";',
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
        f"ssl_ciphers {door_render.MOZILLA_INTERMEDIATE_CIPHERS};",
        "ssl_prefer_server_ciphers off;",
        f'ssl_dhparam "{ops_door.DHPARAM}";',
        "ssl_session_cache shared:door_tls:10m;",
        "ssl_session_timeout 1d;",
        "ssl_session_tickets off;",
    ):
        assert line in conf and line not in plain, line
    assert "ssl-config.mozilla.org" in conf
    assert "RSA" not in door_render.MOZILLA_INTERMEDIATE_CIPHERS.replace("ECDHE-RSA", "").replace("DHE-RSA", "")
    # Plain HTTP to a TLS port (nginx's 497) is the door's JSON 400 on both ports; never on a plain door.
    rest, grpc = server_blocks(conf)
    for block in (rest, grpc):
        assert "error_page 497 /_door/use_https;" in block and "location @use_https {" in block
    assert "error_page 497" not in plain
    # HSTS on every HTTPS answer: server-wide, and in each REST location that adds headers of its own.
    hsts = 'add_header Strict-Transport-Security "max-age=63072000" always;'
    assert hsts not in plain and hsts not in grpc
    assert rest.split("location", 1)[0].count(hsts) == 1  # the server's own
    locations = re.findall(r"^        location .*?^        \}", rest, re.M | re.S)
    adding = [block for block in locations if "add_header " in block]
    assert len(adding) == 4  # the page, @unauthorized, @too_many, @too_many_local
    assert all(hsts in block for block in adding)


def test_a_live_certificate_is_read_at_every_new_connection():
    live = ops_door.TlsFiles("/srv/tls/server.pem", "/srv/tls/server.pem", live=True)
    conf = ops_door.render(dataclasses.replace(settings(), tls=live))[0]
    assert 'ssl_certificate "/srv/tls/server.pem$door_tls_reread";' in conf
    assert 'ssl_certificate_key "/srv/tls/server.pem$door_tls_reread";' in conf
    assert 'map $ssl_server_name $door_tls_reread {\n        default "";\n    }' in conf
    assert "$door_tls_reread" not in ops_door.render(dataclasses.replace(settings(), tls=TLS))[0]


def test_tls_paths_must_be_plain_absolute_paths():
    for bad in (ops_door.TlsFiles("cert.pem", "/k.pem"), ops_door.TlsFiles('/c"ert.pem', "/k.pem")):
        with pytest.raises(ValueError, match="TLS files"):
            dataclasses.replace(settings(), tls=bad)


def test_the_local_ca_and_certificate_are_made_once_private_and_for_this_machine(tmp_path):
    folder = tmp_path / "tls"
    files, made = door_tls.local_certificates(folder, door_tls.server_names(["door.example"], environ={}))
    server = str(folder / "server.pem")  # key and certificate in one file, read at every new connection
    assert made and files == ops_door.TlsFiles(server, server, str(folder / "ca.pem"), live=True)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "server.pem").read_text() == (folder / "key.pem").read_text() + (folder / "cert.pem").read_text()
    for private in ("key.pem", "ca-key.pem", "server.pem"):
        assert (folder / private).stat().st_mode & 0o777 == 0o600
    ca = door_tls.openssl("x509", "-in", files.ca, "-noout", "-ext", "basicConstraints,keyUsage")
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE", ca) and "Certificate Sign" in ca
    cert = door_tls.openssl("x509", "-in", files.cert, "-noout", "-ext", "subjectAltName,basicConstraints")
    assert "IP Address:127.0.0.1" in cert and "DNS:localhost" in cert and "DNS:door.example" in cert
    assert "CA:FALSE" in cert
    door_tls.openssl("verify", "-CAfile", files.ca, files.cert)  # raises unless the CA signed it (server.pem's)
    before = (folder / "cert.pem").read_bytes()
    assert door_tls.local_certificates(folder, door_tls.server_names(["door.example"], environ={})) == (files, False)
    # A name asked for that the certificate lacks: a new certificate from the same CA.
    names = door_tls.server_names(environ={door_tls.NAMES_ENV: "10.0.0.7, other.example"})
    assert door_tls.local_certificates(folder, names)[1] is True
    assert (folder / "cert.pem").read_bytes() != before
    assert {"10.0.0.7", "other.example"} <= door_tls.certificate_names(folder / "cert.pem")
    with pytest.raises(ValueError, match=door_tls.NAMES_ENV):
        door_tls.server_names(environ={door_tls.NAMES_ENV: "not a name"})


def test_a_users_certificate_replaces_the_local_ca_and_leaves_no_stale_ca_pem(tmp_path, monkeypatch):
    folder = tmp_path / "tls"
    door_tls.local_certificates(folder, ["localhost"])
    user = tmp_path / "user"
    user.mkdir()
    door_tls.openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-keyout", str(user / "key.pem"), "-out", str(user / "cert.pem"), "-subj", "/CN=door.example",
    )  # fmt: skip
    monkeypatch.setenv(door_tls.CERT_ENV, str(user / "cert.pem"))
    monkeypatch.setenv(door_tls.KEY_ENV, str(user / "key.pem"))
    files, made = door_tls.door_certificates(folder)
    assert files == ops_door.TlsFiles(str(user / "cert.pem"), str(user / "key.pem")) and not made
    assert sorted(p.name for p in folder.iterdir()) == []  # ca.pem, ca-key.pem, cert.pem, key.pem: gone
    monkeypatch.delenv(door_tls.KEY_ENV)
    with pytest.raises(ValueError, match="go together"):
        door_tls.door_certificates(folder)


@pytest.mark.skipif(ops_door.missing_nginx() is not None, reason=str(ops_door.missing_nginx()))
def test_nginx_accepts_a_tls_door(tmp_path):
    (tmp_path / "api_keys").write_text(KEY + "\n")
    files, _ = door_tls.local_certificates(tmp_path / "tls", ["localhost", "127.0.0.1"])
    door = dataclasses.replace(
        local_door(tmp_path / "api_keys"), tls_cert=files.cert, tls_key=files.key, tls_live=files.live
    )
    try:
        door_nginx.install_config(tmp_path, door)  # runs nginx -t, which loads the certificate and the DH group
        assert "ssl_certificate" in (tmp_path / ops_door.CONFIG).read_text()
    finally:
        shutil.rmtree(door_nginx.shared_folder_path(tmp_path), ignore_errors=True)
        shutil.rmtree(door_nginx.published_page_path(tmp_path), ignore_errors=True)
