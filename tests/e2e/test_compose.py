"""The compose deployment as users run it: `make image-test` (not part of `make test`; it needs Docker).

Starts `make up`'s arrangement from the images `make image` and `make door-image` build (test_image.py
builds them first in the same run): replicas of one service on a bridge network, found by the door
through Docker's DNS, only the door published. Then, under load from real clients checking every
answer: one replica killed and started again (nothing failed, nothing wrong), a scale-up and back, a
rolling update to an image whose archives carry another model version (nothing failed, answers switch
from the old version to the new), and `make down` leaving nothing behind.
"""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest
import requests

from benchmarks import replicas as load
from clients.grpc import GrpcClient
from clients.rest import RestClient
from deploy import compose, image
from ops import door as ops_door
from ops import server as ops_server
from tools.build_archives import ARCHIVES, build

pytestmark = pytest.mark.image
CLIENT_KEY = "compose-test-client-key-0123456789"
NEW_VERSION = "2.0-compose-test"
NEW_IMAGE = "digitlab:compose-test"
CLIENTS = 8  # enough to keep both replicas busy on 2 cores; every answer is checked
TIMEOUT = 30


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """`make up REPLICAS=2` on free ports with the test's client key; `make down` after the module."""
    try:
        image.ensure_docker()
    except image.NoDocker as err:
        pytest.skip(f"no Docker daemon here ({err}); the compose test runs where Docker does")
    if not image.image_exists(image.IMAGE):
        image.build()
    if not image.image_exists(image.DOOR_IMAGE):
        image.build_door()
    key_file = tmp_path_factory.mktemp("compose-keys") / "api_keys"
    key_file.write_text(CLIENT_KEY + "\n")
    port, grpc_port = ops_server.free_ports(2)
    settings = compose.Up(port=port, grpc_port=grpc_port)
    with pytest.MonkeyPatch.context() as env:
        # Behind Docker's userland proxy (dockerd --iptables=false) every client is one address: the load
        # below would meet the per-client limits, which test_door.py tests on their own.
        env.setenv(ops_door.LIMITS_SWITCH_ENV, "off")
        seconds = compose.up(2, key_file, settings)
        print(f"\nmake up REPLICAS=2: door following 2 ready replicas after {seconds:.0f}s")
        try:
            yield argparse.Namespace(
                host=settings.host, port=port, grpc_port=grpc_port, key_file=key_file, base_image=image.IMAGE
            )
        finally:
            compose.compose("down", "--remove-orphans")


def url(d: argparse.Namespace) -> str:
    return f"http://{d.host}:{d.port}"


def test_only_the_door_is_published_and_the_replicas_are_found_by_name(deployment):
    containers = compose.replica_containers()
    assert len(containers) == 2
    addresses = sorted(compose.address(c) for c in containers)
    assert len(set(addresses)) == 2 and not any(a.startswith("127.") for a in addresses)  # own namespaces
    for c in containers:
        assert docker("port", c) == ""  # nothing of a replica is published
        networks = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", c))
        assert list(networks) == [f"{compose.PROJECT}_serving"]
    door_ports = docker("port", compose.compose("ps", "-q", "door", capture=True).strip())
    assert sorted(door_ports.splitlines()) == sorted(
        [f"7090/tcp -> 127.0.0.1:{deployment.grpc_port}", f"8090/tcp -> 127.0.0.1:{deployment.port}"]
    )
    assert sorted(compose.followed()["ready"]) == addresses  # the door found both through Docker's DNS


def test_rest_and_a_grpc_stream_through_the_door(deployment):
    with RestClient(url(deployment), CLIENT_KEY, timeout=TIMEOUT) as client:
        assert client.predict("palindrome", {"digits": [1, 2, 3, 2]})["digit"] == 1
    resp = requests.post(
        f"{url(deployment)}/predictions/palindrome",
        json={"digits": [5, 6, 6]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=TIMEOUT,
    )
    assert resp.json()["digit"] == 5 and resp.headers["X-Model-Version"] == "1.0"
    with GrpcClient(f"{deployment.host}:{deployment.grpc_port}", CLIENT_KEY, timeout=TIMEOUT) as client:
        frames = list(
            client.stream("interpolate", {"start": {"seed": 1, "index": 0}, "end": {"seed": 1, "index": 1}, "steps": 8})
        )
    assert len(frames) == 8


def test_a_killed_replica_costs_no_request(deployment):
    args = argparse.Namespace(**vars(deployment), clients=CLIENTS, seconds=45, kill_at=10.0, image=None)
    result = load.run(2, args, CLIENT_KEY, "kill")
    print("\n" + load.describe(result))
    assert result["answered"] > 0 and result["failed"] == 0 and result["wrong"] == 0, result["failures"]
    assert result["replica_ready_after_kill_s"] is not None  # the restarted replica was followed again
    assert sorted(compose.followed()["ready"]) == sorted(compose.address(c) for c in compose.replica_containers())


def test_scaling_up_and_back(deployment):
    settings = compose.Up(port=deployment.port, grpc_port=deployment.grpc_port)
    compose.up(3, deployment.key_file, settings)
    assert len(compose.followed()["ready"]) == len(compose.replica_containers()) == 3
    compose.up(2, deployment.key_file, settings)
    assert len(compose.followed()["ready"]) == len(compose.replica_containers()) == 2


@pytest.fixture(scope="module")
def new_image(deployment, tmp_path_factory):
    """The serving image with its archives rebuilt as another model version (what `make image MODEL_VERSION=`
    gives), layered on the tested image so that it builds in seconds."""
    context = tmp_path_factory.mktemp("new-image")
    for name, spec in ARCHIVES.items():
        build(name, spec, store=context, version=NEW_VERSION)
    (context / "Dockerfile").write_text(f"FROM {image.IMAGE}\nCOPY *.mar /app/model_store/\n")
    docker("build", "--network", "host", "--tag", NEW_IMAGE, str(context))
    yield NEW_IMAGE
    subprocess.run(["docker", "image", "rm", "--force", NEW_IMAGE], capture_output=True)


def test_a_rolling_update_fails_nothing_and_switches_versions(deployment, new_image):
    args = argparse.Namespace(**vars(deployment), clients=CLIENTS, seconds=0, kill_at=5.0, image=new_image)
    result = load.run(2, args, CLIENT_KEY, "rollout")
    print("\n" + load.describe(result))
    assert result["failed"] == 0 and result["wrong"] == 0, result["failures"]
    versions = result["versions"]
    assert set(versions) == {"1.0", NEW_VERSION}
    # Old answers stop once the last old replica has drained; from then on only the new version answers.
    assert versions["1.0"]["last_s"] <= result["rollout_done_s"] < versions[NEW_VERSION]["last_s"]
    assert versions["1.0"]["first_s"] < versions[NEW_VERSION]["first_s"]
    assert len(compose.replica_containers()) == 2
    for c in compose.replica_containers():
        assert docker("inspect", "--format", "{{.Config.Image}}", c) == new_image


def test_down_leaves_nothing_behind(deployment):
    compose.compose("down", "--remove-orphans")
    assert compose.replica_containers() == [] and compose.compose("ps", "-q", capture=True).strip() == ""
    networks = docker("network", "ls", "--format", "{{.Name}}").split()
    assert f"{compose.PROJECT}_serving" not in networks
