"""The deployment files validate against their schemas and say what the service needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .helpers import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
CORE_MANIFESTS = ["deployment.yaml", "deployment-gpu.yaml", "service.yaml", "pdb.yaml", "hpa.yaml",
                  "prometheus-adapter.yaml"]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.mark.parametrize("name", CORE_MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate.validate(load(K8S / name), "1.30", strict=True)


def test_kustomization_lists_every_manifest_but_the_optional_gpu_pool() -> None:
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "deployment-gpu.yaml"}
    assert listed == present


def test_servicemonitor_scrapes_the_service_port() -> None:
    monitor = load(K8S / "servicemonitor.yaml")
    service = load(K8S / "service.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_deployment_probes_and_grace(name: str) -> None:
    deployment = load(K8S / name)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    drain = float(env["SR_REQUEST_TIMEOUT_S"]) + float(env.get("SR_DRAIN_DELAY_S", 0))
    assert pod["terminationGracePeriodSeconds"] > drain
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_deployments_do_not_share_pods() -> None:
    cpu = load(K8S / "deployment.yaml")["spec"]["selector"]["matchLabels"]
    gpu = load(K8S / "deployment-gpu.yaml")["spec"]["selector"]["matchLabels"]
    assert cpu != gpu and not (cpu.items() <= gpu.items() or gpu.items() <= cpu.items())
    gpu_limits = load(K8S / "deployment-gpu.yaml")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == 1


def test_compose_file_follows_the_compose_specification() -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(REPO_ROOT / "docker-compose.yml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_prometheus_grafana_and_a_gpu_profile() -> None:
    compose = load(REPO_ROOT / "docker-compose.yml")
    services = compose["services"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["subpixel"]["condition"] == "service_healthy"
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("./deploy/prometheus", "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        assert path in mounts
    gpu = services["subpixel-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(REPO_ROOT / "Dockerfile")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_health_and_stop_signal() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2  # multi-stage
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/readyz" in text
    assert "STOPSIGNAL SIGTERM" in text and "COPY model_store" in text
