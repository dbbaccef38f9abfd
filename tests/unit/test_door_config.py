"""The door's config as rendered from its one template, without a TorchServe behind it."""

from __future__ import annotations

import re
import shutil

import pytest

from ops import door as ops_door

KEY = "k" * 32
REPLICAS = [
    ops_door.Replica(rest=f"10.0.0.{i}:8080", grpc=f"10.0.0.{i}:7070", ready=f"10.0.0.{i}:8083") for i in (1, 2)
]
MODELS = ["palindrome", "interpolate"]
MAX_BODY = 65536


def rendered(upstream_key: str | None = "ts-key-1", replicas=REPLICAS) -> str:
    return ops_door.render(replicas, MODELS, [KEY], upstream_key, MAX_BODY)[0]


def test_every_replica_is_an_upstream_server_of_each_kind():
    conf = rendered()
    for name, field in (("rest", "rest"), ("grpc", "grpc"), ("ready", "ready")):
        block = re.search(rf"upstream torchserve_{name} \{{(.*?)\}}", conf, re.S).group(1)
        assert re.findall(r"server (\S+) max_fails", block) == [getattr(r, field) for r in REPLICAS]


def test_torchserve_gets_its_own_key_or_none_never_the_clients():
    with_key, without_key = rendered("ts-key-1"), rendered(None)
    assert with_key.count('set_header Authorization "Bearer ts-key-1";') == 2  # REST and gRPC
    assert without_key.count('set_header Authorization "";') == 3  # REST, gRPC and the readiness check
    assert KEY not in with_key  # client keys live only in keys.conf


def test_client_keys_become_one_map_entry_each():
    keys = ops_door.render(REPLICAS, MODELS, [KEY, "n" * 32], None, MAX_BODY)[1]
    assert keys.splitlines() == [f'    "Bearer {KEY}" 1;', f'    "Bearer {"n" * 32}" 1;']


def test_only_the_served_models_are_routes():
    assert re.search(r"location ~ \^/predictions/\(\?<model>palindrome\|interpolate\)\$", rendered())


@pytest.mark.parametrize("key", ["short", 'with"quote-and-more-than-16', "with space and more than 16", "x" * 101])
def test_keys_that_are_weak_or_would_break_the_config_are_refused(key):
    with pytest.raises(ValueError):
        ops_door.render(REPLICAS, MODELS, [key], None, MAX_BODY)


def test_limits_come_from_the_environment_by_documented_names():
    assert ops_door.Limits.from_env({}) == ops_door.LIMITS
    env = {"DIGITLAB_LIMIT_RATE": "400", "DIGITLAB_LIMIT_GRPC_IN_FLIGHT": "8", "DIGITLAB_LIMIT_READ_TIMEOUT_S": "90"}
    limits = ops_door.Limits.from_env(env)
    assert (limits.rate, limits.grpc_in_flight, limits.read_timeout_s, limits.burst) == (400, 8, 90, 100)
    conf = ops_door.render(REPLICAS, MODELS, [KEY], None, MAX_BODY, limits=limits)[0]
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
    ]


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


def test_trusted_proxies_come_from_the_environment_and_nothing_else_is_trusted():
    plain = rendered()
    assert "set_real_ip_from" not in plain and "real_ip_header" not in plain
    limits = ops_door.Limits.from_env({"DIGITLAB_TRUSTED_PROXIES": "172.17.0.1, 10.0.0.0/8"})
    assert limits.trusted_proxies == ("172.17.0.1", "10.0.0.0/8")
    conf = ops_door.render(REPLICAS, MODELS, [KEY], None, MAX_BODY, limits=limits)[0]
    assert re.findall(r"set_real_ip_from (\S+);", conf) == ["172.17.0.1/32", "10.0.0.0/8"]
    assert "real_ip_header X-Forwarded-For;" in conf and "real_ip_recursive on;" in conf
    for bad in ("everyone", "10.0.0.0/33", "1.2.3.4; include /etc/passwd"):
        with pytest.raises(ValueError, match="DIGITLAB_TRUSTED_PROXIES"):
            ops_door.Limits.from_env({"DIGITLAB_TRUSTED_PROXIES": bad})


def test_limits_off_leaves_every_per_client_limit_out_of_the_routes():
    off = ops_door.Limits.from_env({"DIGITLAB_LIMITS": "off"})
    conf = ops_door.render(REPLICAS, MODELS, [KEY], None, MAX_BODY, limits=off)[0]
    assert not re.search(r"^\s*limit_(req|conn) ", conf, re.M)  # the zones stay defined, nothing uses them
    assert conf.count("no per-client limits: DIGITLAB_LIMITS=off") == 2  # the REST and the gRPC route
    on = rendered()
    assert len(re.findall(r"^\s*limit_(req|conn) ", on, re.M)) == 6


def test_a_template_field_without_a_value_is_an_error():
    with pytest.raises(KeyError, match="missing_one"):
        ops_door.fill("a {{ present }} and {{ missing_one }}", {"present": 1})


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
    monkeypatch.setattr(ops_door, "nginx_binary", lambda: None)
    door = local_door(tmp_path / "keys")
    with pytest.raises(SystemExit, match="apt-get install nginx-light"):
        ops_door.start(tmp_path, door)


@pytest.mark.skipif(ops_door.nginx_binary() is None, reason=ops_door.INSTALL_HINT)
@pytest.mark.parametrize(
    "limits",
    [ops_door.LIMITS, ops_door.Limits(per_client=False), ops_door.Limits(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))],
    ids=["limits", "limits-off", "trusted-proxies"],
)
def test_nginx_accepts_a_door_for_several_replicas(tmp_path, limits):
    door = local_door(tmp_path / "api_keys", limits)
    (tmp_path / "api_keys").write_text(KEY + "\n")
    ops_door.install_config(tmp_path, door)  # runs nginx -t; raises when nginx refuses it
    assert (tmp_path / ops_door.CONFIG).stat().st_mode & 0o777 == 0o600


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
    page = ops_door.published_page(private / ".gateway")
    try:
        assert not page.is_relative_to(tmp_path)
        for path in (page, page / "index.html"):
            assert path.stat().st_mode & 0o005 == 0o005 if path.is_dir() else path.stat().st_mode & 0o004
        for parent in page.parents:
            assert parent.stat().st_mode & 0o001, parent  # others may traverse every ancestor
        assert sorted(p.name for p in page.iterdir()) == sorted(p.name for p in ops_door.WEB_ROOT.iterdir())
        (tmp_path / "keys").write_text(KEY + "\n")
        conf, _ = ops_door.render_door(local_door(tmp_path / "keys"), page)
        assert f'root "{page}";' in conf
    finally:
        shutil.rmtree(page)
