"""The serving image, built from scratch and run: `make image-test` (not part of `make test`).

Builds what `make image` and `make door-image` build (installing docker.io, starting dockerd and
bootstrapping the Debian base where missing and possible; skipped with the reason where there is no
Docker), runs the image on loopback ports with host networking and checks that it loads every model
(so the packages the archives need, pydantic among them, are in the image), answers REST, chunked and
gRPC streams, reports readiness, runs as its non-root user on a read-only root file system, and that
the door image in front of it wants the client key.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
import requests

from clients.grpc import GrpcClient
from clients.rest import RestClient
from deploy import compose, image, manifests
from digitlab import catalog
from ops import door as ops_door
from ops.instance import write_properties
from ops.ready import is_ready, ready_url

pytestmark = pytest.mark.image
# The test's ports: 18900 + the default port's last two digits (REST 18980, gRPC 18970, readiness 18983, ...).
TEST_PORT_BASE = 18900
URL_LISTENERS = ("inference_address", "management_address", "metrics_address", "ready_address")
GRPC_LISTENERS = (
    ("grpc_inference_address", "grpc_inference_port"),
    ("grpc_management_address", "grpc_management_port"),
)
IMAGE_USER_ID = "10001"  # deploy/Dockerfile's useradd
CLIENT_KEY = "image-test-client-key-0123456789"
TIMEOUT = 30


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


def logs(name: str, tail: str = "50") -> str:
    """A container's last lines: its output goes to both streams."""
    done = subprocess.run(["docker", "logs", "--tail", tail, name], capture_output=True, text=True)
    return done.stdout + done.stderr


def port_for(default_port: int) -> int:
    return TEST_PORT_BASE + default_port % 100


def loopback_props(props: dict[str, str]) -> dict[str, str]:
    """The image's config with every listener on loopback, on the test's ports (the container uses the host's
    network: one container, checked on its own)."""
    out = dict(props)
    for key in URL_LISTENERS:
        out[key] = f"http://127.0.0.1:{port_for(urlsplit(props[key]).port)}"
    for address, port in GRPC_LISTENERS:
        out[address], out[port] = "127.0.0.1", str(port_for(int(props[port])))
    return out


@pytest.fixture(scope="module")
def images() -> None:
    try:
        image.ensure_docker()
    except image.NoDocker as err:
        pytest.skip(f"no Docker daemon here ({err}); the image test runs where Docker does")
    began = time.monotonic()
    build_s = image.build()
    image.build_door()
    print(f"\ndocker build {build_s:.0f}s; both images, with whatever was missing: {time.monotonic() - began:.0f}s")


@pytest.fixture(scope="module")
def container(images, tmp_path_factory):
    """The image as a replica would run it: host network, loopback ports, read-only root, tmpfs home."""
    config_dir = tmp_path_factory.mktemp("image-config")
    props = loopback_props(image.image_config())
    write_properties(config_dir / "test.properties", props)
    config_dir.chmod(0o755)
    (config_dir / "test.properties").chmod(0o644)
    name = f"digitlab-image-test-{int(time.time())}"
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        f"/home/model-server:exec,uid={IMAGE_USER_ID},gid={IMAGE_USER_ID},mode=0700",
        "--tmpfs",
        "/tmp",
        "--volume",
        f"{config_dir}:/compose:ro",
        "--health-cmd",
        "python -m ops.ready --config /compose/test.properties",
        "--health-interval",
        "2s",
        image.IMAGE,
        "--config",
        "/compose/test.properties",
    )
    began = time.monotonic()
    try:
        while not is_ready(ready_url(props)):
            if docker("inspect", "--format", "{{.State.Running}}", name) != "true":
                pytest.fail(f"the container exited:\n{logs(name)}")
            if time.monotonic() - began > compose.READY_TIMEOUT_S:
                pytest.fail(f"not ready after {compose.READY_TIMEOUT_S:.0f} s:\n{logs(name)}")
            time.sleep(0.5)
        yield name, props, time.monotonic() - began
    finally:
        docker("rm", "--force", name, check=False)


def test_image_has_the_pinned_torch_torchserve_and_java_17(images):
    versions = docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        image.IMAGE,
        "-c",
        "import torch, ts, pydantic; print(torch.__version__, ts.__version__, pydantic.VERSION)",
    )
    torch_version, ts_version, _ = versions.split()
    assert tuple(int(x) for x in torch_version.split("+")[0].split(".")) >= (2, 14, 1)
    assert ts_version == "0.12.0"
    java = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "java", image.IMAGE, "-version"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert 'version "17.' in java


def test_every_model_loads_and_answers_rest_without_a_torchserve_key(container):
    _, props, _ = container
    with RestClient(props["inference_address"], token="", timeout=TIMEOUT) as client:  # "": send no key
        assert client.predict("palindrome", {"digits": [1, 2, 3, 2]})["digit"] == 1
        assert client.predict("palindrome_rnn", {"digits": "73456543"})["digit"] == 7
        assert len(client.predict("sample", {"n": 2, "seed": 7})["images"]) == 2
        between = {"start": {"seed": 1, "index": 0}, "end": {"seed": 2, "index": 0}, "steps": 4}
        frames = list(client.stream("interpolate", between))  # the client adds "stream": true
    assert [f["index"] for f in frames] == [0, 1, 2, 3]


def test_grpc_streams_frames_one_by_one(container):
    _, props, _ = container
    target = f"{props['grpc_inference_address']}:{props['grpc_inference_port']}"
    with GrpcClient(target, token="", timeout=TIMEOUT) as client:
        frames = list(client.stream("interpolate", {"start": {"digit": 9}, "end": {"digit": 3}, "steps": 5}))
    assert [f["index"] for f in frames] == list(range(5))
    assert frames[0]["digit"] == 9 and frames[-1]["digit"] == 3


def test_ready_and_healthy_once_every_worker_is_ready(container):
    name, props, ready_s = container
    with urllib.request.urlopen(ready_url(props), timeout=5) as resp:
        assert resp.status == 200
    deadline = time.monotonic() + 30
    while docker("inspect", "--format", "{{.State.Health.Status}}", name) != "healthy":
        assert time.monotonic() < deadline, "Docker's healthcheck never turned healthy"
        time.sleep(1)
    print(f"container ready in {ready_s:.1f}s")


def test_runs_as_its_own_user_on_a_read_only_root(container):
    name, _, _ = container
    assert docker("exec", name, "id", "-u") == IMAGE_USER_ID
    assert subprocess.run(["docker", "exec", name, "touch", "/app/x"], capture_output=True).returncode != 0


def test_door_image_wants_the_client_key(container, tmp_path):
    _, props, _ = container
    door_port, door_grpc_port = port_for(90), port_for(91)
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    # The prefix holds the sockets between the door's two layers: nginx's workers (nobody, when the container
    # runs as root) must traverse it, as ops/door_nginx.py makes its shared folder (0711).
    tmp_path.chmod(0o711)
    conf, keys = ops_door.render(
        ops_door.DoorSettings(
            replicas=(
                ops_door.Replica(
                    rest=ops_door.host_port(props["inference_address"]),
                    grpc=f"{props['grpc_inference_address']}:{props['grpc_inference_port']}",
                    ready=ops_door.host_port(props["ready_address"]),
                ),
            ),
            models=catalog.NAMES,
            client_keys=(CLIENT_KEY,),
            upstream_key_file=None,
            max_body_bytes=int(props["max_request_size"]),
            port=door_port,
            grpc_port=door_grpc_port,
        )
    )
    (tmp_path / ops_door.CONFIG).write_text(conf)
    (tmp_path / ops_door.KEYS_INCLUDE).write_text(keys)
    name = f"digitlab-door-test-{int(time.time())}"
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "--volume",
        f"{tmp_path}:/door",
        image.DOOR_IMAGE,
    )
    url = f"http://127.0.0.1:{door_port}/predictions/palindrome"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = requests.post(url, json={"digits": [1, 2, 3, 2]}, timeout=TIMEOUT)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, logs(name)
                time.sleep(0.5)
        assert refused.status_code == 401
        with RestClient(f"http://127.0.0.1:{door_port}", CLIENT_KEY, timeout=TIMEOUT) as client:
            answer = client.predict("palindrome", {"digits": [1, 2, 3, 2]})
        assert answer["digit"] == 1
    finally:
        docker("rm", "--force", name, check=False)


def test_door_image_accepts_the_kubernetes_configmap_as_its_pod_runs_it(images, tmp_path):
    """deploy/k8s/base/door.yaml's mounts: config and keys read-only, an empty prefix and temp (no logs: the
    door logs to its telemetry socket), user www-data."""
    (tmp_path / "nginx.conf").write_text(manifests.DOOR_CONFIG.read_text())
    (tmp_path / "keys.conf").write_text(manifests.render([CLIENT_KEY])[1])
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    www_data = "uid=33,gid=33"
    checked = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--add-host",
            f"{manifests.SERVICE}:127.0.0.1",
            "--tmpfs",
            f"/door:{www_data}",
            "--tmpfs",
            f"/door/tmp:{www_data}",
            "--volume",
            f"{tmp_path / 'nginx.conf'}:/door/nginx.conf:ro",
            "--volume",
            f"{tmp_path / 'keys.conf'}:/door/keys.conf:ro",
            # nginx -t as the pod's nginx would load it (the image's entrypoint runs nginx, taking no arguments)
            "--entrypoint",
            "nginx",
            image.DOOR_IMAGE,
            *("-p", "/door/", "-c", "nginx.conf", "-e", "stderr", "-t"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
