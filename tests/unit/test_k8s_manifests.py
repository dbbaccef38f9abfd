"""Every Kubernetes manifest in deploy/k8s/ validates against the Kubernetes API's own schema, offline.

The kubernetes client's models (pydantic, generated from the API's OpenAPI document) reject unknown
fields, wrong types and missing required fields, so a typo such as `readinesProbe` fails here instead
of being dropped by the cluster. kustomize's own rendering is checked too where kubectl is installed.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.client import models

from deploy import manifests
from ops import door as ops_door
from ops.instance import READY_PATH
from ops.supervisor import DRAIN_TIMEOUT_S, STOP_GRACE_S

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
OVERLAYS = sorted(p.parent for p in K8S.glob("*/kustomization.yaml"))


def model_for(doc: dict):
    """The client model of a document: apiVersion apps/v1 + kind Deployment -> V1Deployment."""
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    return getattr(models, f"{version.capitalize()}{doc['kind']}")


def validate(doc: dict):
    return model_for(doc).model_validate(doc)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def patch_paths() -> set[Path]:
    return {d / p for d in OVERLAYS for p in kustomization(d).get("patchesStrategicMerge", [])}


def merge(base, patch):
    """A strategic merge patch as kustomize applies ours: maps merge, lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: merge(base[k], v) if k in base else v for k, v in patch.items()}}
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {i["name"]: i for i in base}
        merged = [merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        return merged + [i for i in base if i["name"] not in {p["name"] for p in patch}]
    return patch


def base_object(kind: str, name: str) -> dict:
    return next(
        d
        for p in MANIFESTS
        if p not in patch_paths()
        for d in documents(p)
        if d["kind"] == kind and d["metadata"]["name"] == name
    )


@pytest.mark.parametrize("path", sorted(set(MANIFESTS) - patch_paths()), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_valid_against_the_api_schema(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("path", sorted(patch_paths()), ids=lambda p: str(p.relative_to(K8S)))
def test_every_patch_gives_a_valid_object(path):
    for patch in documents(path):
        patched = merge(copy.deepcopy(base_object(patch["kind"], patch["metadata"]["name"])), patch)
        validate(patched)


def test_the_validator_refuses_what_the_api_would_refuse():
    deployment = base_object("Deployment", "digitlab-torchserve")
    typo = copy.deepcopy(deployment)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for bad in (typo, missing, wrong_type):
        with pytest.raises(ValueError):
            validate(bad)


def test_gpu_variant_asks_for_a_gpu_per_replica():
    patch = next(d for p in patch_paths() for d in documents(p) if d["kind"] == "Deployment")
    patched = validate(merge(copy.deepcopy(base_object("Deployment", "digitlab-torchserve")), patch))
    resources = patched.spec.template.spec.containers[0].resources
    assert resources.limits["nvidia.com/gpu"] == resources.requests["nvidia.com/gpu"] == "1"
    assert patched.spec.template.spec.containers[0].readiness_probe is not None  # kept from the base


def test_probes_ask_the_supervisor_of_the_image():
    container = validate(base_object("Deployment", "digitlab-torchserve")).spec.template.spec.containers[0]
    ready_port = next(p.container_port for p in container.ports if p.name == "ready")
    assert manifests.image_config()["ready_address"].endswith(f":{ready_port}")
    for probe, path in (
        (container.startup_probe, "/ready"),
        (container.readiness_probe, "/ready"),
        (container.liveness_probe, "/live"),
    ):
        assert (probe.http_get.path, probe.http_get.port) == (path, "ready")


def test_door_configmap_is_rendered_from_the_current_template(monkeypatch):
    for name in (
        ops_door.LIMITS_SWITCH_ENV,
        ops_door.TRUSTED_PROXIES_ENV,
        *map(ops_door.limit_env, ops_door.LIMIT_FIELDS),
    ):
        monkeypatch.delenv(name, raising=False)  # the committed ConfigMap holds the shipped limits
    assert manifests.DOOR_CONFIG.read_text() == manifests.door_config(), "stale: run python -m deploy.manifests render"


def test_door_points_at_the_torchserve_service_and_mounts_the_key_secret():
    service = validate(base_object("Service", manifests.SERVICE))
    upstream_ports = {int(address.rsplit(":", 1)[1]) for address in vars(manifests.service_replica()).values()}
    assert {p.port for p in service.spec.ports} >= upstream_ports
    door = validate(base_object("Deployment", "digitlab-door")).spec.template.spec
    assert {v.secret.secret_name for v in door.volumes if v.secret} == {manifests.SECRET, manifests.TLS_SECRET}


def test_secret_manifest_holds_the_key_and_validates(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITLAB_API_KEY", "k" * 32)
    secret = validate(yaml.safe_load(manifests.secret_manifest(tmp_path / "no_key_file")))
    assert secret.metadata.name == manifests.SECRET
    conf = base64.b64decode(secret.data["keys.conf"]).decode()
    assert f'"~^(?i:bearer) +{"k" * 32}$" {ops_door.key_id("k" * 32)};' in conf  # the key exact, its id


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: kustomize's rendering not checked")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_output_is_valid(overlay):
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"}
    for doc in docs:
        validate(doc)


def test_a_rollout_never_drops_capacity_and_a_stop_drains_within_the_grace_period():
    deployment = base_object("Deployment", "digitlab-torchserve")
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate" and rolling["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "torchserve"]
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH  # ready only when warm on every path
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    # preStop pause, then the supervisor's drain and TorchServe's own stop, all before the SIGKILL
    assert pod["terminationGracePeriodSeconds"] >= pause + DRAIN_TIMEOUT_S + STOP_GRACE_S
