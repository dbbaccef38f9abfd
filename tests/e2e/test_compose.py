"""The compose deployment as users run it: `make image-test` (not part of `make test`; it needs Docker).

Starts `make up`'s arrangement from the images `make image` and `make door-image` build (test_image.py
builds them first in the same run): replicas of one service on a bridge network, found by the door
through Docker's DNS, only the door published. Then, under load from real clients checking every
answer: one replica killed and started again (nothing failed, nothing wrong), a scale-up and back, a
rolling update to an image whose archives carry another model version (nothing failed, answers switch
from the old version to the new), and `make down` leaving nothing behind. Prometheus runs beside them
(deploy/monitoring/): published on loopback only, it finds the replicas by name as they are scaled and
rolled out, and its API shows the traffic sent through the door in both replicas' TorchServe counters,
the door's own counters and the supervisors' readiness.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import pytest
import requests

from benchmarks.resilience import replicas as load
from clients.grpc import GrpcClient
from clients.rest import RestClient
from deploy import compose, image, monitoring
from digitlab import catalog
from ops import door as ops_door
from ops import server as ops_server
from tools.build_archives import build

pytestmark = pytest.mark.image
CLIENT_KEY = "compose-test-client-key-0123456789"
NEW_VERSION = "2.0-compose-test"
NEW_IMAGE = "digitlab:compose-test"
CLIENTS = 8  # enough to keep both replicas busy on 2 cores; every answer is checked
TIMEOUT = 30
SCRAPE_WAIT_S = 60  # Prometheus scrapes and resolves every 5 s; slack for a busy 2-core machine


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
    port, grpc_port, prometheus_port = ops_server.free_ports(3)
    settings = compose.Up(port=port, grpc_port=grpc_port, prometheus_port=prometheus_port)
    with pytest.MonkeyPatch.context() as env:
        # Behind Docker's userland proxy (dockerd --iptables=false) every client is one address: the load
        # below would meet the per-client limits, which test_door.py tests on their own.
        env.setenv(ops_door.LIMITS_SWITCH_ENV, "off")
        env.setenv("PROMETHEUS_PORT", str(prometheus_port))  # every compose.Up() below keeps this port
        seconds = compose.up(2, key_file, settings)
        print(f"\nmake up REPLICAS=2: door following 2 ready replicas after {seconds:.0f}s")
        try:
            yield argparse.Namespace(
                host=settings.host,
                port=port,
                grpc_port=grpc_port,
                key_file=key_file,
                base_image=image.IMAGE,
                prometheus=compose.prometheus_url(settings),
            )
        finally:
            compose.compose("down", "--remove-orphans")


def url(d: argparse.Namespace) -> str:
    return f"http://{d.host}:{d.port}"


def promql(d: argparse.Namespace, query: str) -> list[dict]:
    """The result of an instant query through Prometheus's HTTP API."""
    answer = requests.get(f"{d.prometheus}/api/v1/query", params={"query": query}, timeout=TIMEOUT).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def by_label(result: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def scraped(d: argparse.Namespace, job: str) -> list[str]:
    """The addresses of `job`'s targets whose last scrape succeeded."""
    answer = requests.get(f"{d.prometheus}/api/v1/targets", params={"state": "active"}, timeout=TIMEOUT).json()
    return sorted(
        t["labels"]["instance"]
        for t in answer["data"]["activeTargets"]
        if t["labels"]["job"] == job and t["health"] == "up"
    )


def eventually(check, what: str, timeout: float = SCRAPE_WAIT_S):
    """Polls `check` until it returns something true; fails with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen by Prometheus within {timeout:.0f} s (last: {value!r})")
        time.sleep(1)
    return value


def replica_targets(port: int) -> list[str]:
    """Where Prometheus should scrape the running replicas: each one's address on the serving network."""
    return sorted(f"{compose.address(c)}:{port}" for c in compose.replica_containers())


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


def test_prometheus_is_published_on_loopback_only_and_scrapes_both_replicas_by_name(deployment):
    container = compose.compose("ps", "-q", compose.PROMETHEUS_SERVICE, capture=True).strip()
    port = deployment.prometheus.rsplit(":", 1)[1]
    assert docker("port", container).splitlines() == [f"9090/tcp -> 127.0.0.1:{port}"]
    for job, metrics_port in (("replica-torchserve", 8082), ("replica-supervisor", 8083)):
        assert job in {j["job_name"] for j in monitoring.load(monitoring.COMPOSE_CONFIG)["scrape_configs"]}
        if job == "replica-supervisor":
            continue  # its /metrics is the supervisor's exporter: test_prometheus_counts_the_ready_replicas
        eventually(lambda j=job, p=metrics_port: scraped(deployment, j) == replica_targets(p), f"both {job} targets up")
    console = requests.get(f"{deployment.prometheus}/consoles/digitlab.html", timeout=TIMEOUT)
    assert console.status_code == 200 and "Per model, at the door" in console.text
    assert all(f"<td>{model}</td>" in console.text for model in catalog.NAMES)  # one row per budgeted model


def traffic_seen_on_every_replica(d: argparse.Namespace, sent: int = 200) -> dict[str, float]:
    """Sends `sent` palindromes through the door; returns how much each running replica's TorchServe counter grew,
    as Prometheus's API says, once every replica's grew and together by at least `sent`."""
    query = 'sum by (replica) (ts_inference_requests_total{job="replica-torchserve", model_name="palindrome"})'
    replicas = {compose.address(c) for c in compose.replica_containers()}
    before = by_label(eventually(lambda: promql(d, query), "TorchServe's palindrome counters"), "replica")
    with RestClient(url(d), CLIENT_KEY, timeout=TIMEOUT) as client:
        for i in range(sent):
            assert client.predict("palindrome", {"digits": [i % 10, 2, 3, 2]})["digit"] == i % 10

    def grown() -> dict[str, float]:
        now = by_label(promql(d, query), "replica")
        growth = {r: now.get(r, 0.0) - before.get(r, 0.0) for r in replicas}
        return growth if all(g > 0 for g in growth.values()) and sum(growth.values()) >= sent else {}

    return eventually(grown, f"{sent} palindrome requests spread over the replicas {sorted(replicas)}")


def test_prometheus_sees_requests_through_the_door_on_both_replicas(deployment):
    """The traffic sent through the door shows in each replica's TorchServe counter, through Prometheus's API."""
    growth = traffic_seen_on_every_replica(deployment)
    assert len(growth) == 2
    print(f"\nTorchServe counters grew by {growth} after 200 requests through the door")


def test_prometheus_sees_the_doors_own_counters(deployment):
    """Depends on the door's exporter (port 9145, digitlab_door_requests_total{model, code})."""
    query = 'sum(digitlab_door_requests_total{job="door", model="palindrome", code="200"}) or vector(0)'
    before = float(promql(deployment, query)[0]["value"][1])
    sent = 50
    with RestClient(url(deployment), CLIENT_KEY, timeout=TIMEOUT) as client:
        for _ in range(sent):
            client.predict("palindrome", {"digits": [1, 2, 3, 2]})
    refused = requests.post(f"{url(deployment)}/predictions/palindrome", json={"digits": [1, 2, 1]}, timeout=TIMEOUT)
    assert refused.status_code == 401  # no key: the door's own answer, counted too
    eventually(lambda: float(promql(deployment, query)[0]["value"][1]) - before >= sent, "the door's 200s")
    eventually(lambda: promql(deployment, 'digitlab_door_requests_total{job="door", code="401"}'), "the door's 401s")
    p99 = 'model:digitlab_door_request_duration_seconds:p99_1m{model="palindrome"}'
    eventually(lambda: promql(deployment, p99), "the recorded p99 of palindrome (the door's histogram)")


def test_a_clients_request_id_is_in_the_doors_json_log_on_stdout(deployment, capfd):
    """`docker logs` of the door: one JSON object per line (nginx's lines relayed by the follower, and its own),
    the request's id as the client sent it; nothing written under the mounted prefix's logs/."""
    sent, began = f"compose-trace-{time.time_ns()}", time.time()
    refused = requests.post(
        f"{url(deployment)}/predictions/palindrome", json={}, headers={"X-Request-Id": sent}, timeout=TIMEOUT
    )
    assert refused.status_code == 401 and refused.headers["X-Request-Id"] == sent
    door = compose.compose("ps", "-q", "door", capture=True).strip()

    def logged() -> list[dict]:
        out = subprocess.run(["docker", "logs", door], capture_output=True, text=True, check=True)
        lines = [json.loads(line) for line in (out.stdout + out.stderr).splitlines()]  # each one JSON
        return [line for line in lines if line.get("request_id") == sent]

    (line,) = eventually(logged, "the request id in the door's log", timeout=10)
    assert line["status"] == 401 and line["logger"] == "door" and line["upstream"] == "", line
    written = [p for p in compose.DOOR_DIR.rglob("*.log*") if p.stat().st_mtime >= began]
    assert not written, written  # nothing of the door's logs on the mounted volume
    capfd.readouterr()
    compose.main(["logs", "door"])  # make logs SERVICE=door
    assert f'"request_id": "{sent}"' in capfd.readouterr().out


def test_prometheus_counts_the_ready_replicas(deployment):
    """Depends on the supervisor's exporter (port 8083, /metrics: digitlab_ready)."""
    eventually(lambda: scraped(deployment, "replica-supervisor") == replica_targets(8083), "both supervisors up")
    eventually(lambda: promql(deployment, "digitlab:replicas_ready:sum == 2"), "2 ready replicas")


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
    # Prometheus resolves the service name again: the new replica is scraped, without a restart of anything.
    eventually(lambda: scraped(deployment, "replica-torchserve") == replica_targets(8082), "the third replica")
    compose.up(2, deployment.key_file, settings)
    assert len(compose.followed()["ready"]) == len(compose.replica_containers()) == 2
    eventually(lambda: scraped(deployment, "replica-torchserve") == replica_targets(8082), "the scale-down")


@pytest.fixture(scope="module")
def new_image(deployment, tmp_path_factory):
    """The serving image with its archives rebuilt as another model version (what `make image MODEL_VERSION=`
    gives), layered on the tested image so that it builds in seconds."""
    context = tmp_path_factory.mktemp("new-image")
    for name, spec in catalog.BY_NAME.items():
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
    # Prometheus dropped the old replicas and scrapes the new ones, and their counters see new traffic.
    eventually(lambda: scraped(deployment, "replica-torchserve") == replica_targets(8082), "the rolled-out replicas")
    traffic_seen_on_every_replica(deployment)


def test_down_leaves_nothing_behind(deployment):
    compose.compose("down", "--remove-orphans")
    assert compose.replica_containers() == [] and compose.compose("ps", "-q", capture=True).strip() == ""
    networks = docker("network", "ls", "--format", "{{.Name}}").split()
    assert f"{compose.PROJECT}_serving" not in networks
