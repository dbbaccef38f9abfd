"""Prometheus beside the replicas (deploy/monitoring/): promtool's own checks where it is installed, and what
must agree with the rest of the deployment everywhere.

promtool (Debian's package prometheus; CI installs it) checks both configurations, the rules, and runs
rules_test.yml, whose tests are shown able to fail: with an alert removed, or made to fire always, they do.
Debian's promtool knows no kubernetes_sd_configs; there the Kubernetes configuration is checked with its
discovery blocks swapped for static targets, and the blocks themselves against Prometheus's documented schema.
The pure checks hold the configurations to the compose file, the image's ports, the Kubernetes labels and
port names, and digitlab's catalog (every model has a latency budget).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from deploy import compose, image, monitoring
from digitlab import catalog

ROOT = Path(__file__).resolve().parents[2]
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
COMPOSE = yaml.safe_load(compose.COMPOSE_FILE.read_text())
CONFIGS = {"compose": monitoring.COMPOSE_CONFIG, "kubernetes": monitoring.K8S_CONFIG}
MAX_SCRAPE_INTERVAL_S = 5.0
# The door's histogram buckets (digitlab_door_request_duration_seconds, the exporter's contract).
DOOR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVICE_OF_JOB = {"replica-torchserve": compose.SERVICE, "replica-supervisor": compose.SERVICE, "door": "door"}

needs_promtool = pytest.mark.skipif(
    monitoring.promtool() is None,
    reason="promtool not installed (Debian: apt-get install prometheus, as .ci/run does): promtool's checks skipped",
)


def config(name: str) -> dict:
    return monitoring.load(CONFIGS[name])


def jobs(name: str) -> dict[str, dict]:
    return {job["job_name"]: job for job in config(name)["scrape_configs"]}


def seconds(duration: str) -> float:
    """A Prometheus duration (5s, 1m, 1m30s, 500ms) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def rules() -> list[dict]:
    return [rule for group in monitoring.load(monitoring.RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def k8s_documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S_BASE / name).read_text()) if d]


def pod_template(file: str, deployment: str) -> dict:
    return next(d for d in k8s_documents(file) if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment)[
        "spec"
    ]["template"]


def container_ports(template: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def image_port(key: str) -> int:
    return urlsplit(image.image_config()[key]).port


def relabel_keep(job: dict, source: str) -> str:
    """The regex of the job's `keep` rule on `source` (a single label)."""
    return next(
        r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep" and r["source_labels"] == [source]
    )


# -- promtool -------------------------------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("what", ["compose", "kubernetes"])
def test_promtool_check_config(what):
    done = monitoring.check_config(CONFIGS[what])
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_config_of_the_kubernetes_config_as_written():
    if not monitoring.kubernetes_sd_supported():
        pytest.skip("this promtool has no Kubernetes discovery (Debian builds Prometheus without it)")
    done = monitoring.run_promtool("check", "config", str(monitoring.K8S_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_rules():
    done = monitoring.run_promtool("check", "rules", str(monitoring.RULES))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_test_rules():
    done = monitoring.run_promtool("test", "rules", str(monitoring.RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def mutated_rules_test(tmp_path: Path, alert: str, mutate) -> int:
    """promtool test rules, on a copy of rules.yml where `mutate` changed (or removed: None) one alert."""
    groups = monitoring.load(monitoring.RULES)
    for group in groups["groups"]:
        group["rules"] = [
            changed
            for rule in group["rules"]
            if (changed := (mutate(dict(rule)) if rule.get("alert") == alert else rule)) is not None
        ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(groups))
    shutil.copy2(monitoring.RULES_TEST, tmp_path / "rules_test.yml")
    return monitoring.run_promtool("test", "rules", str(tmp_path / "rules_test.yml")).returncode


@needs_promtool
def test_the_rules_tests_pass_on_an_unchanged_copy(tmp_path):
    """The control for the two below: only the mutation makes them fail."""
    assert mutated_rules_test(tmp_path, alerts()[0], lambda rule: rule) == 0


@needs_promtool
@pytest.mark.parametrize("alert", alerts())
def test_the_rules_tests_fail_when_an_alert_never_fires(tmp_path, alert):
    assert mutated_rules_test(tmp_path, alert, lambda rule: None) != 0


@needs_promtool
@pytest.mark.parametrize("alert", alerts())
def test_the_rules_tests_fail_when_an_alert_always_fires(tmp_path, alert):
    def always(rule: dict) -> dict:
        rule.pop("for", None)
        return {**rule, "expr": "vector(1)"}

    assert mutated_rules_test(tmp_path, alert, always) != 0


# -- the scrape jobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["compose", "kubernetes"])
def test_jobs_name_what_they_scrape(what):
    names = set(jobs(what))
    assert names >= set(monitoring.JOBS)
    assert all("replica" in j for j in monitoring.JOBS[:2]) and "door" in monitoring.JOBS[2]
    # the rules and the console name the jobs they read
    assert 'up{job="replica-supervisor"}' in monitoring.RULES.read_text()


@pytest.mark.parametrize("what", ["compose", "kubernetes"])
def test_every_replica_and_the_door_are_scraped_every_5s_or_faster(what):
    cfg = config(what)
    default = cfg["global"]["scrape_interval"]
    assert seconds(cfg["global"]["evaluation_interval"]) <= MAX_SCRAPE_INTERVAL_S
    for name, job in jobs(what).items():
        interval = seconds(job.get("scrape_interval", default))
        assert interval <= MAX_SCRAPE_INTERVAL_S, name
        assert seconds(job.get("scrape_timeout", cfg["global"]["scrape_timeout"])) < interval, name


def test_compose_discovers_the_services_by_name_on_their_metrics_ports():
    ports = {
        "replica-torchserve": image_port("metrics_address"),
        "replica-supervisor": image_port("ready_address"),
        "door": monitoring.DOOR_METRICS_PORT,
    }
    assert ports["replica-torchserve"] == 8082 and ports["replica-supervisor"] == 8083
    for name, job in jobs("compose").items():
        if name not in SERVICE_OF_JOB:
            continue
        [sd] = job["dns_sd_configs"]
        assert sd["names"] == [SERVICE_OF_JOB[name]] and SERVICE_OF_JOB[name] in COMPOSE["services"]
        assert sd["type"] == "A" and sd["port"] == ports[name]
        # a scaled, killed or replaced replica is found or dropped within a scrape or two
        assert seconds(sd["refresh_interval"]) <= MAX_SCRAPE_INTERVAL_S
        assert job["metrics_path"] == "/metrics"


def test_replica_metrics_reach_the_serving_network_only():
    # TorchServe's metrics listen on the container's every interface (Prometheus is another container) ...
    assert urlsplit(image.image_config()["metrics_address"]).hostname == "0.0.0.0"
    assert urlsplit(image.image_config()["management_address"]).hostname == "127.0.0.1"
    # ... and neither a replica nor the door publishes them; Prometheus itself is published on loopback only.
    assert "ports" not in COMPOSE["services"][compose.SERVICE]
    assert all(":9145" not in str(p) for p in COMPOSE["services"]["door"].get("ports", []))
    prometheus = COMPOSE["services"][compose.PROMETHEUS_SERVICE]
    assert prometheus["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    assert prometheus["networks"] == COMPOSE["services"][compose.SERVICE]["networks"]


def test_compose_runs_prometheus_with_this_folder_and_its_console():
    prometheus = COMPOSE["services"][compose.PROMETHEUS_SERVICE]
    assert prometheus["image"] == f"${{PROMETHEUS_IMAGE:-{image.PROMETHEUS_IMAGE}}}"
    [mount] = prometheus["volumes"]
    source, target, mode = mount.split(":")
    assert (compose.COMPOSE_FILE.parent / source).resolve() == monitoring.HERE and mode == "ro"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"])
    assert flags["config.file"] == f"{target}/{monitoring.COMPOSE_CONFIG.name}"
    assert flags["web.console.templates"] == f"{target}/{monitoring.CONSOLES.name}"
    # where both the Debian-built image (deploy/prometheus.Dockerfile) and the official one keep them
    assert flags["web.console.libraries"] == "/usr/share/prometheus/console_libraries"
    assert flags["web.console.libraries"] in image.PROMETHEUS_DOCKERFILE.read_text()


def test_make_up_takes_prometheus_port_and_image_from_the_environment(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_PORT", raising=False)
    monkeypatch.delenv("PROMETHEUS_IMAGE", raising=False)
    assert compose.Up().environment()["PROMETHEUS_PORT"] == "9090"
    assert compose.Up().environment()["PROMETHEUS_IMAGE"] == image.PROMETHEUS_IMAGE
    monkeypatch.setenv("PROMETHEUS_PORT", "19090")
    monkeypatch.setenv("PROMETHEUS_IMAGE", "quay.io/prometheus/prometheus:v2.53.3")
    settings = compose.Up("127.0.0.1", 8090, 7090)  # as the callers that predate Prometheus build it
    assert settings.environment()["PROMETHEUS_PORT"] == "19090"
    assert settings.environment()["PROMETHEUS_IMAGE"] == "quay.io/prometheus/prometheus:v2.53.3"
    assert compose.prometheus_url(settings) == "http://127.0.0.1:19090"


# -- Kubernetes -----------------------------------------------------------------------------------------------


def test_kubernetes_discovery_blocks_follow_prometheus_schema():
    assert monitoring.kubernetes_sd_problems(config("kubernetes")) == []
    bad = {"scrape_configs": [{"job_name": "x", "kubernetes_sd_configs": [{"role": "pods", "namespace": "a"}]}]}
    assert len(monitoring.kubernetes_sd_problems(bad)) == 2  # the check can fail


@pytest.mark.parametrize(
    ("job", "file", "deployment"),
    [
        ("replica-torchserve", "torchserve.yaml", "digitlab-torchserve"),
        ("replica-supervisor", "torchserve.yaml", "digitlab-torchserve"),
        ("door", "door.yaml", "digitlab-door"),
    ],
)
def test_kubernetes_jobs_select_the_manifests_pods_by_their_labels(job, file, deployment):
    labels = pod_template(file, deployment)["metadata"]["labels"]
    scrape = jobs("kubernetes")[job]
    [sd] = scrape["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"] == {"own_namespace": True}
    [selector] = sd["selectors"]
    selected = dict(pair.split("=") for pair in selector["label"].split(","))
    assert selected.items() <= labels.items()
    keep = next(r for r in scrape["relabel_configs"] if r.get("action") == "keep" and len(r["source_labels"]) == 2)
    meta = [f"__meta_kubernetes_pod_label_{re.sub('[^a-zA-Z0-9_]', '_', k)}" for k in selected]
    assert keep["source_labels"] == meta and re.fullmatch(keep["regex"], ";".join(selected.values()))


def test_kubernetes_jobs_scrape_the_replicas_ports_by_name():
    ports = container_ports(pod_template("torchserve.yaml", "digitlab-torchserve"))
    for job, port in (("replica-torchserve", image_port("metrics_address")), ("replica-supervisor", 8083)):
        name = relabel_keep(jobs("kubernetes")[job], "__meta_kubernetes_pod_container_port_name")
        assert ports[name] == port, job
    assert image_port("ready_address") == ports["ready"]
    annotations = pod_template("torchserve.yaml", "digitlab-torchserve")["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_kubernetes_door_pods_declare_the_metrics_port():
    name = relabel_keep(jobs("kubernetes")["door"], "__meta_kubernetes_pod_container_port_name")
    ports = container_ports(pod_template("door.yaml", "digitlab-door"))
    if name not in ports:
        pytest.skip(
            f"deploy/k8s/base/door.yaml declares no container port named {name!r} yet: its owner adds "
            f"{{name: {name}, containerPort: {monitoring.DOOR_METRICS_PORT}}} with the door's exporter"
        )
    assert ports[name] == monitoring.DOOR_METRICS_PORT


def test_the_network_policy_lets_prometheus_reach_the_metrics_ports():
    policy = next(d for d in k8s_documents("torchserve.yaml") if d["kind"] == "NetworkPolicy")
    prometheus_labels = pod_template("prometheus.yaml", "digitlab-prometheus")["metadata"]["labels"]
    admitted = {
        port["port"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if peer["podSelector"]["matchLabels"].items() <= prometheus_labels.items()
        for port in rule["ports"]
    }
    assert admitted == {image_port("metrics_address"), image_port("ready_address")}


def test_kubernetes_prometheus_mounts_the_rendered_configmap():
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    generator = next(g for g in kustomization["configMapGenerator"] if g["name"] == "digitlab-prometheus")
    assert sorted(Path(f).name for f in generator["files"]) == sorted(monitoring.K8S_FILES)
    assert "prometheus.yaml" in kustomization["resources"]
    template = pod_template("prometheus.yaml", "digitlab-prometheus")
    [volume] = [v for v in template["spec"]["volumes"] if "configMap" in v]
    paths = {item["key"]: item["path"] for item in volume["configMap"]["items"]}
    assert set(paths) == set(monitoring.K8S_FILES)
    [container] = template["spec"]["containers"]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume["name"])
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert flags["config.file"] == f"{mount}/{paths['prometheus.yml']}"
    assert f"{flags['web.console.templates']}/digitlab.html" == f"{mount}/{paths['digitlab.html']}"
    assert paths["rules.yml"] in config("kubernetes")["rule_files"]
    assert template["spec"]["serviceAccountName"] == "digitlab-prometheus"


def test_kubernetes_copies_are_rendered_from_this_folder():
    assert monitoring.stale() == [], "stale: run make k8s-monitoring (python -m deploy.monitoring render)"


# -- rules and console ----------------------------------------------------------------------------------------


def test_every_served_model_has_a_p99_budget_on_a_bucket_bound():
    budgets = {
        rule["labels"]["model"]: float(re.fullmatch(r"vector\(([\d.]+)\)", rule["expr"]).group(1))
        for rule in rules()
        if rule.get("record") == "model:digitlab_door_p99_budget_seconds"
    }
    assert set(budgets) == set(catalog.NAMES)
    assert all(b in DOOR_BUCKETS for b in budgets.values()), budgets


def test_the_required_alerts_are_there():
    assert {
        "DigitlabReplicaNotReady",
        "DigitlabHigh5xxRatio",
        "DigitlabTorchServeRestarting",
        "DigitlabLatencyOverBudget",
    } <= set(alerts())
    not_ready = next(r for r in rules() if r.get("alert") == "DigitlabReplicaNotReady")
    assert not_ready["for"] == "1m" and "digitlab_ready" in not_ready["expr"]
    high_5xx = next(r for r in rules() if r.get("alert") == "DigitlabHigh5xxRatio")
    assert "> 0.01" in high_5xx["expr"] and "[5m]" in next(
        r["expr"] for r in rules() if r.get("record") == "model:digitlab_door_5xx:ratio_5m"
    )


def test_every_alert_is_tested_firing_and_not_firing():
    tests = monitoring.load(monitoring.RULES_TEST)["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in alerts():
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert}
        assert outcomes == {True, False}, alert


def test_the_console_reads_only_recorded_series_and_the_contract():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    text = monitoring.CONSOLE.read_text()
    used = set(re.findall(r"\b(?:model|model_class|replica_model|digitlab):[a-z0-9_:]+", text))
    assert used and used <= recorded, used - recorded
    for name in ("digitlab_ready", "digitlab_torchserve_restarts_total", "digitlab_stalled_workers_repaired_total"):
        assert name in text
    # the console's sections: per model req/s, p50/p99 and errors, and the ready replicas
    for expr in (
        "model:digitlab_door_requests:rate1m",
        "model:digitlab_door_request_duration_seconds:p50_1m",
        "model:digitlab_door_request_duration_seconds:p99_1m",
        "model_class:digitlab_door_requests:rate1m",
        "digitlab:replicas_ready:sum",
    ):
        assert f'"{expr}' in text, expr
