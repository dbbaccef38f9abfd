"""Prometheus beside the replicas: the configurations, rules and console in this folder, and what checks them.

    python -m deploy.monitoring render   # deploy/k8s/base/prometheus/: the copies kustomize turns into a ConfigMap
    python -m deploy.monitoring check    # promtool: check config (compose, Kubernetes), check rules, test rules

prometheus.compose.yml is what `make up`'s Prometheus runs (deploy/compose.yaml mounts this folder);
prometheus.k8s.yml is what deploy/k8s/base/prometheus.yaml runs; both load rules.yml, which rules_test.yml
tests, and serve consoles/digitlab.html. Debian's promtool (package prometheus) knows no kubernetes_sd_configs
(Debian builds Prometheus without Kubernetes discovery): there the Kubernetes configuration is checked with its
discovery blocks swapped for static targets, everything else (jobs, relabelling, rule files) as written, and the
discovery blocks themselves by `kubernetes_sd_problems`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMPOSE_CONFIG = HERE / "prometheus.compose.yml"
K8S_CONFIG = HERE / "prometheus.k8s.yml"
RULES = HERE / "rules.yml"
RULES_TEST = HERE / "rules_test.yml"
CONSOLES = HERE / "consoles"
CONSOLE = CONSOLES / "digitlab.html"
K8S_DIR = ROOT / "deploy" / "k8s" / "base" / "prometheus"
# The ConfigMap's keys (deploy/k8s/base/kustomization.yaml) and where each comes from.
K8S_FILES = {"prometheus.yml": K8S_CONFIG, "rules.yml": RULES, "digitlab.html": CONSOLE}
# The scrape jobs, in both configurations: TorchServe's metrics and the supervisor's on each replica, the door's.
JOBS = ("replica-torchserve", "replica-supervisor", "door")
DOOR_METRICS_PORT = 9145  # the door's exporter, inside its container or pod
# What kubernetes_sd_configs may hold (Prometheus's documentation; HTTP client settings aside).
K8S_SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
K8S_SD_KEYS = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata"}
PROMTOOL_TIMEOUT_S = 60


def promtool() -> str | None:
    return shutil.which("promtool")


def run_promtool(*args: str, tool: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool or promtool() or "promtool", *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kubernetes_sd_supported(tool: str | None = None) -> bool:
    """Whether this promtool knows kubernetes_sd_configs (the official build does, Debian's does not)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.yml"
        job = {"job_name": "probe", "kubernetes_sd_configs": [{"role": "pod"}]}
        probe.write_text(yaml.safe_dump({"scrape_configs": [job]}))
        return run_promtool("check", "config", str(probe), tool=tool).returncode == 0


def without_kubernetes_sd(config: dict) -> dict:
    """`config` with each job's kubernetes_sd_configs replaced by one static target: what a promtool without
    Kubernetes discovery can check (every other field, relabelling and rule files included)."""
    out = yaml.safe_load(yaml.safe_dump(config))
    for job in out.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["pod.invalid:80"]}]
    return out


def kubernetes_sd_problems(config: dict) -> list[str]:
    """What is wrong in the kubernetes_sd_configs blocks, by Prometheus's documented schema."""
    problems = []
    for job in config.get("scrape_configs", []):
        for sd in job.get("kubernetes_sd_configs", []):
            name = job["job_name"]
            if sd.get("role") not in K8S_SD_ROLES:
                problems.append(f"{name}: role {sd.get('role')!r} is not one of {sorted(K8S_SD_ROLES)}")
            if unknown := set(sd) - K8S_SD_KEYS:
                problems.append(f"{name}: unknown fields {sorted(unknown)}")
            namespaces = sd.get("namespaces", {})
            if set(namespaces) - {"own_namespace", "names"}:
                problems.append(f"{name}: namespaces holds {sorted(namespaces)}")
            if not isinstance(namespaces.get("own_namespace", False), bool):
                problems.append(f"{name}: namespaces.own_namespace is not a boolean")
            for selector in sd.get("selectors", []):
                if set(selector) - {"role", "label", "field"} or selector.get("role") != sd.get("role"):
                    problems.append(f"{name}: selector {selector} (a pod role takes pod selectors only)")
    return problems


def check_config(config: Path, tool: str | None = None) -> subprocess.CompletedProcess:
    """`promtool check config` on `config`; a Kubernetes one without Kubernetes discovery where promtool lacks it
    (beside a copy of the rule files it names, which promtool checks too)."""
    data = load(config)
    has_k8s = any("kubernetes_sd_configs" in job for job in data.get("scrape_configs", []))
    if not has_k8s or kubernetes_sd_supported(tool):
        return run_promtool("check", "config", str(config), tool=tool)
    with tempfile.TemporaryDirectory() as tmp:
        for rule_file in data.get("rule_files", []):
            shutil.copy2(config.parent / rule_file, Path(tmp) / rule_file)
        copy = Path(tmp) / config.name
        copy.write_text(yaml.safe_dump(without_kubernetes_sd(data)))
        return run_promtool("check", "config", str(copy), tool=tool)


def checks(tool: str | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Every promtool check, by what it checks."""
    return {
        "check config prometheus.compose.yml": check_config(COMPOSE_CONFIG, tool),
        "check config prometheus.k8s.yml": check_config(K8S_CONFIG, tool),
        "check rules rules.yml": run_promtool("check", "rules", str(RULES), tool=tool),
        "test rules rules_test.yml": run_promtool("test", "rules", str(RULES_TEST), tool=tool),
    }


def render() -> list[Path]:
    """deploy/k8s/base/prometheus/: the files the ConfigMap digitlab-prometheus is generated from."""
    K8S_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in K8S_FILES.items():
        (K8S_DIR / name).write_text(source.read_text())
        written.append(K8S_DIR / name)
    return written


def stale() -> list[str]:
    """The Kubernetes copies that differ from their sources here."""
    return [
        name
        for name, source in K8S_FILES.items()
        if not (K8S_DIR / name).exists() or (K8S_DIR / name).read_text() != source.read_text()
    ]
