"""The deployment files validate against their schemas and say what the service needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.serving.metrics import build_metrics

from .helpers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPONENTS = K8S / "components"
OVERLAY = DEPLOY / "k8s-overlays" / "full"
CPU_DEPLOYMENT = K8S / "deployment.yaml"
GPU_DEPLOYMENT = COMPONENTS / "gpu" / "deployment-gpu.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter-values.yaml"
# Kinds whose schemas come from the Prometheus Operator's CRDs, not from Kubernetes.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# The project does not install kubectl: Debian's kubernetes-client is 1.20, whose kustomize
# predates Components. Where kubectl is absent, render_python() renders the kustomizations.
KUBECTL = shutil.which("kubectl")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def manifests(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}


def validate(obj: dict[str, Any]) -> None:
    """Kubernetes 1.30's schema, strict; the operator's kinds by their shape."""
    if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        return
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"} and obj["metadata"]["name"]
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        assert spec["selector"]["matchLabels"] and spec["endpoints"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    else:
        assert set(spec) == {"groups"} and spec["groups"]
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
                assert isinstance(rule["expr"], str) and ("alert" in rule) != ("record" in rule)


def render_python(directory: Path) -> list[dict[str, Any]]:
    """kustomize for the subset the shipped kustomizations use: resources and components.

    The fallback where kubectl is absent; where it is present, a test checks both agree.
    """
    kustomization = load(directory / "kustomization.yaml")
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "components"}, (
        f"{directory}: a kustomize feature the pure-Python renderer lacks")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render_python(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in kustomization.get("components", []):
        component = (directory / entry).resolve()
        assert load(component / "kustomization.yaml")["kind"] == "Component"
        objects += render_python(component)
    return objects


def render_kubectl(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    return render_kubectl(directory) if KUBECTL else render_python(directory)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@pytest.mark.parametrize("path", [CPU_DEPLOYMENT, K8S / "service.yaml", K8S / "pdb.yaml", K8S / "hpa.yaml",
                                  GPU_DEPLOYMENT, COMPONENTS / "gpu" / "pdb-gpu.yaml"],
                         ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate.validate(load(path), "1.30", strict=True)


def test_kustomizations_list_every_manifest() -> None:
    # The base: every manifest beside it (the adapter's Helm values are not one).
    assert set(load(K8S / "kustomization.yaml")["resources"]) == manifests(K8S) - {ADAPTER_VALUES.name}
    # Each optional Component: every manifest in its folder, and the example overlay enables them all.
    components = sorted(p.parent for p in COMPONENTS.glob("*/kustomization.yaml"))
    assert {c.name for c in components} == {"monitoring", "gpu"}
    for component in components:
        kustomization = load(component / "kustomization.yaml")
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        assert kustomization["kind"] == "Component"
        assert set(kustomization["resources"]) == manifests(component)
    overlay = load(OVERLAY / "kustomization.yaml")
    assert [(OVERLAY / r).resolve() for r in overlay["resources"]] == [K8S]
    assert sorted((OVERLAY / c).resolve() for c in overlay["components"]) == components


def test_the_base_needs_no_crds() -> None:
    assert not [key(o) for o in render_python(K8S) if (o["apiVersion"], o["kind"]) in CRD_KINDS]


@pytest.mark.parametrize("directory", [K8S, OVERLAY], ids=["base", "overlay-full"])
def test_kustomize_renders_objects_that_validate(directory: Path) -> None:
    objects = render(directory)
    keys = [key(o) for o in objects]
    assert len(keys) == len(set(keys)), keys
    for obj in objects:
        validate(obj)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    if directory == OVERLAY:
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds
        assert {"subpixel", "subpixel-gpu"} == {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: the pure-Python renderer is used alone")
@pytest.mark.parametrize("directory", [K8S, OVERLAY], ids=["base", "overlay-full"])
def test_the_python_renderer_agrees_with_kubectl(directory: Path) -> None:
    assert sorted(render_python(directory), key=key) == sorted(render_kubectl(directory), key=key)


def test_servicemonitor_scrapes_the_service_port() -> None:
    monitor = load(COMPONENTS / "monitoring" / "servicemonitor.yaml")
    service = load(K8S / "service.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # The operator names the scrape job after the Service: the alerts' job="subpixel".
    assert service["metadata"]["name"] == "subpixel" and "jobLabel" not in monitor["spec"]


def test_prometheusrule_has_the_groups_of_alerts_yml() -> None:
    rule = load(COMPONENTS / "monitoring" / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    result = subprocess.run([sys.executable, str(DEPLOY / "prometheus" / "prometheusrule.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_alerts_see_a_vanished_service_and_every_latency_outcome() -> None:
    rules = {r["alert"]: r["expr"] for g in load(DEPLOY / "prometheus" / "alerts.yml")["groups"] for r in g["rules"]}
    (job,) = [j["job_name"] for j in load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]]
    assert f'absent(up{{job="{job}"}})' in rules["SubpixelTargetDown"]
    assert f'up{{job="{job}"}} == 0' in rules["SubpixelTargetDown"]
    # The request histogram is labelled by status_class; the p99 alert must include 5xx (504s).
    metrics = build_metrics(CollectorRegistry(), [("espcn", 2)])
    families = {f.name: f for f in metrics.registry.collect()}
    bucket_labels = {tuple(sorted(s.labels)) for s in families["sr_request_duration_seconds"].samples}
    assert ("le", "method", "scale", "status_class") in bucket_labels
    p99 = rules["SubpixelP99LatencyHigh"]
    match = re.search(r'sr_request_duration_seconds_bucket\{status_class=~"([^"]+)"\}', p99)
    assert match and "5xx" in match.group(1).split("|"), p99


def pod_spec(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = load(path)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("path", [CPU_DEPLOYMENT, GPU_DEPLOYMENT], ids=lambda p: p.name)
def test_deployment_probes_and_grace(path: Path) -> None:
    pod = pod_spec(path)
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    # preStop runs inside the grace period, before SIGTERM: then the drain delay, then the
    # longest admitted request.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pre_stop = float(command[1])
    assert pre_stop >= 1
    drain = pre_stop + float(env["SR_REQUEST_TIMEOUT_S"]) + float(env.get("SR_DRAIN_DELAY_S", 0))
    assert pod["terminationGracePeriodSeconds"] > drain
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_both_pools_have_the_same_hardening() -> None:
    cpu, gpu = pod_spec(CPU_DEPLOYMENT), pod_spec(GPU_DEPLOYMENT)
    assert cpu["securityContext"] == gpu["securityContext"]
    assert cpu["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert cpu["containers"][0]["securityContext"] == gpu["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    for pod in (cpu, gpu):  # a read-only root: /tmp is writable
        assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_deployments_do_not_share_pods() -> None:
    cpu, gpu = load(CPU_DEPLOYMENT), load(GPU_DEPLOYMENT)
    for deployment in (cpu, gpu):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    cpu_sel, gpu_sel = cpu["spec"]["selector"]["matchLabels"], gpu["spec"]["selector"]["matchLabels"]
    assert cpu_sel != gpu_sel and not (cpu_sel.items() <= gpu_sel.items() or gpu_sel.items() <= cpu_sel.items())
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    return selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_each_pdb_covers_one_pool_and_the_service_both() -> None:
    deployments = [load(CPU_DEPLOYMENT), load(GPU_DEPLOYMENT)]
    pdbs = [load(K8S / "pdb.yaml"), load(COMPONENTS / "gpu" / "pdb-gpu.yaml")]
    for pdb, deployment in zip(pdbs, deployments, strict=True):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [d["metadata"]["name"] for d in deployments if selects(selector, d)] == [deployment["metadata"]["name"]]
    # The Service routes to both pools on purpose (one entry point; full pods answer 503).
    service_selector = load(K8S / "service.yaml")["spec"]["selector"]
    assert all(selects(service_selector, d) for d in deployments)


def test_the_hpa_owns_the_replica_count() -> None:
    hpa = load(K8S / "hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", load(CPU_DEPLOYMENT)["metadata"]["name"])
    assert "replicas" not in load(CPU_DEPLOYMENT)["spec"], "re-applying it would undo the HPA's scaling"
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_hpa_metric_is_served_by_the_adapter_rule() -> None:
    (metric,) = load(K8S / "hpa.yaml")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    values = load(ADAPTER_VALUES)
    rules = [r for r in values["rules"]["custom"] if r["name"]["as"] == name]
    assert len(rules) == 1, f"no prometheus-adapter rule exposes {name}"
    (rule,) = rules
    # The series it finds are the service's own metric, per namespace and pod.
    series = re.fullmatch(r"(\w+)\{(.*)\}", rule["seriesQuery"])
    assert series is not None and re.fullmatch(rule["name"]["matches"], series.group(1))
    exported = {f.name for f in build_metrics(CollectorRegistry()).registry.collect()}
    assert series.group(1) in exported
    assert 'namespace!=""' in series.group(2) and 'pod!=""' in series.group(2)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    for template in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert template in query, query
    assert re.search(r"by \(<<\.GroupBy>>\)", query), query


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


def test_compose_gpu_service_keeps_every_cpu_setting() -> None:
    # safe_load resolves the merge keys as compose does.
    services = load(REPO_ROOT / "docker-compose.yml")["services"]
    cpu, gpu = services["subpixel"]["environment"], services["subpixel-gpu"]["environment"]
    assert cpu.keys() <= gpu.keys(), f"lost on the GPU service: {cpu.keys() - gpu.keys()}"
    assert {k: v for k, v in gpu.items() if k in cpu} == cpu
    assert gpu["SR_DEVICE"] == "cuda"
    # The GPU batch size, as in the Kubernetes GPU pool; the CPU service keeps the default.
    k8s_gpu = {e["name"]: e["value"] for e in pod_spec(GPU_DEPLOYMENT)["containers"][0]["env"]}
    assert gpu["SR_MAX_BATCH_SIZE"] == k8s_gpu["SR_MAX_BATCH_SIZE"] and "SR_MAX_BATCH_SIZE" not in cpu
    assert cpu["SR_REQUEST_TIMEOUT_S"] == k8s_gpu["SR_REQUEST_TIMEOUT_S"]
    grace = services["subpixel"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > float(cpu["SR_REQUEST_TIMEOUT_S"])


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!").strip("/"))
        if any(compiled.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_the_venv() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    sources = []
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert {"pyproject.toml", "README.md", "service", "model_store"} <= set(sources)
    tracked = subprocess.run(["git", "ls-files", "--", *sources], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert tracked and {t.split("/")[0] for t in tracked} == set(sources)
    dropped = [t for t in tracked if dockerignore_excludes(patterns, t)]
    assert not dropped, f".dockerignore drops what the Dockerfile COPYs: {dropped}"
    for path in (".venv/bin/python", ".git/HEAD", "runs/x", "test-artifacts/x", "service/__pycache__/app.pyc",
                 "subpixel.egg-info/PKG-INFO", ".pytest_cache/x", ".hypothesis/x", "bench-results/x"):
        assert dockerignore_excludes(patterns, path), path
