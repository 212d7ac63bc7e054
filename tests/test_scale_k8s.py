"""deploy/k8s renders with `kubectl kustomize` (Debian's kubectl) and every object validates
against the Kubernetes schemas bundled with `kubernetes-validate` (offline); the gateway's
config in the ConfigMap is a valid gateway config that shares state through the Redis below."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, skip_or_fail

K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        skip_or_fail("kubectl is not installed (scripts/install.sh installs it)")
    out = subprocess.run([str(kubectl), "kustomize", str(K8S)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def test_every_object_validates_against_the_kubernetes_schemas(
        objects: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any error
    kinds = sorted(f"{o['kind']}/{o['metadata']['name'].split('-config')[0]}" for o in objects)
    assert kinds == sorted([
        "ConfigMap/r2-gateway", "Deployment/r2-embedder", "Deployment/r2-gateway",
        "Deployment/r2-redis", "HorizontalPodAutoscaler/r2-gateway", "Namespace/r2-gateway",
        "PodDisruptionBudget/r2-gateway", "Secret/r2-provider-keys", "Service/r2-embedder",
        "Service/r2-gateway", "Service/r2-redis"])


def test_a_broken_object_is_refused_by_the_validator(objects: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    broken = find(objects, "Deployment", "r2-gateway")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_gateway_deployment_probes_resources_and_scaling(
        objects: list[dict[str, Any]]) -> None:
    dep = find(objects, "Deployment", "r2-gateway")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    config_map = find(objects, "ConfigMap", "r2-gateway-config")["metadata"]["name"]
    assert pod["volumes"][0]["configMap"]["name"] == config_map  # the hashed name
    assert container["envFrom"][0]["secretRef"]["name"] == "r2-provider-keys"
    labels = dep["spec"]["selector"]["matchLabels"]
    assert find(objects, "PodDisruptionBudget", "r2-gateway")["spec"]["selector"][
        "matchLabels"] == labels
    assert find(objects, "Service", "r2-gateway")["spec"]["selector"] == labels
    hpa = find(objects, "HorizontalPodAutoscaler", "r2-gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "r2-gateway"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_the_embedder_runs_qwen3_pooling_on_a_gpu(objects: list[dict[str, Any]]) -> None:
    (container,) = find(objects, "Deployment", "r2-embedder")["spec"]["template"]["spec"][
        "containers"]
    assert container["args"][:4] == ["--model", "Qwen/Qwen3-0.6B", "--runner", "pooling"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert find(objects, "Service", "r2-embedder")["spec"]["ports"][0]["port"] == 8000


def test_the_configmap_is_a_valid_gateway_config_on_the_shared_redis(
        objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway.config import load_settings

    text = find(objects, "ConfigMap", "r2-gateway-config")["data"]["gateway.yaml"]
    env = {e["name"]: e["value"] for e in find(objects, "Deployment", "r2-gateway")["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    for name, value in {**env, "OPENROUTER_API_KEY": "k", "R2_GATEWAY_KEY": "g"}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "gateway.yaml").write_text(text)
    settings = load_settings(tmp_path / "gateway.yaml")
    assert settings.state is not None and settings.state.redis_url == "redis://r2-redis:6379/0"
    assert settings.server.workers == 2
    repo = yaml.safe_load((REPO / "gateway.yaml").read_text())
    assert yaml.safe_load(text)["deployments"] == repo["deployments"]  # kept in step


def test_compose_runs_redis_and_two_gateway_replicas_on_the_shared_config() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]
    gateway = compose["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["environment"]["R2_REDIS_URL"] == "redis://redis:6379/0"
    assert "redis" in compose and "redis" in gateway["depends_on"]
    mounted = gateway["volumes"][0].split(":")[0]
    assert (REPO / mounted).resolve() == (K8S / "gateway.yaml").resolve()
