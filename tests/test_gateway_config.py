"""The front door's config as rendered from its one template, without a TorchServe behind it."""

from __future__ import annotations

import re
import shutil

import pytest

from tools import gateway

KEY = "k" * 32
REPLICAS = [gateway.Replica(rest=f"10.0.0.{i}:8080", grpc=f"10.0.0.{i}:7070", ready=f"10.0.0.{i}:8083") for i in (1, 2)]
MODELS = ["palindrome", "interpolate"]
MAX_BODY = 65536


def rendered(upstream_key: str | None = "ts-key-1", replicas=REPLICAS) -> str:
    return gateway.render(replicas, MODELS, [KEY], upstream_key, MAX_BODY)[0]


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
    keys = gateway.render(REPLICAS, MODELS, [KEY, "n" * 32], None, MAX_BODY)[1]
    assert keys.splitlines() == [f'    "Bearer {KEY}" 1;', f'    "Bearer {"n" * 32}" 1;']


def test_only_the_served_models_are_routes():
    assert re.search(r"location ~ \^/predictions/\(\?<model>palindrome\|interpolate\)\$", rendered())


@pytest.mark.parametrize("key", ["short", 'with"quote-and-more-than-16', "with space and more than 16", "x" * 101])
def test_keys_that_are_weak_or_would_break_the_config_are_refused(key):
    with pytest.raises(ValueError):
        gateway.render(REPLICAS, MODELS, [key], None, MAX_BODY)


def test_a_template_field_without_a_value_is_an_error():
    with pytest.raises(KeyError, match="missing_one"):
        gateway.fill("a {{ present }} and {{ missing_one }}", {"present": 1})


def local_door(client_key_file) -> gateway.Door:
    """A door for REPLICAS on loopback, its ports never opened: for rendering and nginx -t."""
    return gateway.Door(
        host="127.0.0.1",
        port=1,
        grpc_port=2,
        replicas=REPLICAS,
        models=MODELS,
        torchserve_key_file=None,
        client_key_file=str(client_key_file),
        max_body_bytes=MAX_BODY,
    )


def test_without_nginx_the_door_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gateway, "nginx_binary", lambda: None)
    door = local_door(tmp_path / "keys")
    with pytest.raises(SystemExit, match="apt-get install nginx-light"):
        gateway.start(tmp_path, door)


@pytest.mark.skipif(gateway.nginx_binary() is None, reason=gateway.INSTALL_HINT)
def test_nginx_accepts_a_door_for_several_replicas(tmp_path):
    door = local_door(tmp_path / "api_keys")
    (tmp_path / "api_keys").write_text(KEY + "\n")
    gateway.install_config(tmp_path, door)  # runs nginx -t; raises when nginx refuses it
    assert (tmp_path / gateway.CONFIG).stat().st_mode & 0o777 == 0o600


def test_the_try_it_page_is_served_from_web_and_only_by_get():
    conf = rendered()
    for location in ("location = / {", "location /web/ {"):
        block = conf[conf.index(location) :].split("\n        }", 1)[0]
        assert str(gateway.WEB_ROOT.resolve()) in block and "if ($request_method !~ ^(GET|HEAD)$)" in block
        assert "proxy_pass" not in block  # nothing of the page reaches TorchServe


def test_the_page_link_carries_the_key_in_the_fragment_only():
    assert gateway.page_link("http://127.0.0.1:8090", KEY) == f"http://127.0.0.1:8090/#key={KEY}"


def test_the_page_is_served_from_a_copy_every_nginx_worker_can_read(tmp_path):
    """Workers of a root-started nginx run as nobody: web/ inside a private checkout (a clone in
    `mktemp -d`, 0700) answered 404. The door serves a world-readable copy outside it."""
    private = tmp_path / "checkout"
    private.mkdir(mode=0o700)
    page = gateway.published_page(private / ".gateway")
    try:
        assert not page.is_relative_to(tmp_path)
        for path in (page, page / "index.html"):
            assert path.stat().st_mode & 0o005 == 0o005 if path.is_dir() else path.stat().st_mode & 0o004
        for parent in page.parents:
            assert parent.stat().st_mode & 0o001, parent  # others may traverse every ancestor
        assert sorted(p.name for p in page.iterdir()) == sorted(p.name for p in gateway.WEB_ROOT.iterdir())
        (tmp_path / "keys").write_text(KEY + "\n")
        conf, _ = gateway.render_door(local_door(tmp_path / "keys"), page)
        assert f'root "{page}";' in conf
    finally:
        shutil.rmtree(page)
