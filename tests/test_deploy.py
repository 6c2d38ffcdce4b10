"""The deployment files validate against their schemas and say what the service needs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.config import Settings
from service.serving.metrics import build_metrics

from .helpers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPONENTS = K8S / "components"
OVERLAY = DEPLOY / "k8s-overlays" / "full"
CPU_DEPLOYMENT = K8S / "deployment.yaml"
GPU_DEPLOYMENT = COMPONENTS / "gpu" / "deployment-gpu.yaml"
JOBS = COMPONENTS / "jobs"
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


def render_python(directory: Path, accumulated: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """kustomize for the subset the shipped kustomizations use: resources, components, and
    strategic-merge patches from files, by target or by their own kind and name.

    A Component is applied to what the kustomization including it has accumulated: its
    resources join those, then its patches apply to them all. The fallback where kubectl is
    absent; where it is present, a test checks both agree.
    """
    kustomization = load(directory / "kustomization.yaml")
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "components", "patches"}, (
        f"{directory}: a kustomize feature the pure-Python renderer lacks")
    objects = list(accumulated or [])
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render_python(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in kustomization.get("components", []):
        component = (directory / entry).resolve()
        assert load(component / "kustomization.yaml")["kind"] == "Component"
        objects = render_python(component, objects)
    for entry in kustomization.get("patches", []):
        assert set(entry) <= {"path", "target"}, f"{directory}: a patch the pure-Python renderer lacks: {entry}"
        patch = load(directory / entry["path"])
        if "target" in entry:
            targets = [i for i, o in enumerate(objects) if targeted(entry["target"], o)]
            patch = {**patch, "metadata": {k: v for k, v in patch["metadata"].items() if k != "name"}}
        else:
            targets = [i for i, o in enumerate(objects) if key(o) == key(patch)]
            assert len(targets) == 1, f"{directory}: patch {entry['path']} matches {len(targets)} objects"
        for i in targets:
            objects[i] = strategic_merge(objects[i], patch)
    return objects


def targeted(target: dict[str, str], obj: dict[str, Any]) -> bool:
    assert set(target) <= {"kind", "name", "labelSelector"}, target
    labels = obj["metadata"].get("labels", {})
    wanted = dict(term.split("=", 1) for term in target.get("labelSelector", "").split(",") if term)
    assert all(re.fullmatch(r"[\w./-]+", k + v) for k, v in wanted.items()), "equality selectors only"
    return (target.get("kind", obj["kind"]) == obj["kind"] and target.get("name", obj["metadata"]["name"])
            == obj["metadata"]["name"] and wanted.items() <= labels.items())


# The merge keys of the pod template's lists (Kubernetes' patchMergeKey); other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """Maps merge key by key (null deletes); keyed lists merge by their key, the patch's items
    first, then the original's others (kustomize's order); everything else is replaced."""
    if isinstance(original, dict) and isinstance(patch, dict):
        merged = dict(original)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = strategic_merge(merged[name], value, name) if name in merged else value
        return merged
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        merge_key = MERGE_KEYS[field]
        by_key = {item[merge_key]: item for item in original}
        patched = [strategic_merge(by_key[item[merge_key]], item) if item[merge_key] in by_key else item
                   for item in patch]
        named = {item[merge_key] for item in patch}
        return patched + [item for item in original if item[merge_key] not in named]
    return patch


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
                                  GPU_DEPLOYMENT, COMPONENTS / "gpu" / "pdb-gpu.yaml",
                                  *sorted(set(JOBS.glob("*.yaml")) - {JOBS / "kustomization.yaml",
                                                                      JOBS / "patch-deployments.yaml"})],
                         ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate.validate(load(path), "1.30", strict=True)


def test_kustomizations_list_every_manifest() -> None:
    # The base: every manifest beside it (the adapter's Helm values are not one).
    assert set(load(K8S / "kustomization.yaml")["resources"]) == manifests(K8S) - {ADAPTER_VALUES.name}
    # Each optional Component: every manifest in its folder, a resource or a patch, and the
    # example overlay enables them all.
    components = sorted(p.parent for p in COMPONENTS.glob("*/kustomization.yaml"))
    assert {c.name for c in components} == {"monitoring", "gpu", "jobs"}
    for component in components:
        kustomization = load(component / "kustomization.yaml")
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        assert kustomization["kind"] == "Component"
        patches = {p["path"] for p in kustomization.get("patches", [])}
        assert not patches & set(kustomization["resources"])
        assert set(kustomization["resources"]) | patches == manifests(component)
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
        assert {"ServiceMonitor", "PrometheusRule", "StatefulSet", "PersistentVolumeClaim", "Secret"} <= kinds
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


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The plain values of a container's env (not those from a Secret)."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"an env var set twice: {names}"
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("path", [CPU_DEPLOYMENT, GPU_DEPLOYMENT], ids=lambda p: p.name)
def test_deployment_probes_and_grace(path: Path) -> None:
    pod = pod_spec(path)
    (container,) = pod["containers"]
    env = env_values(container)
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


def server_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"
            and o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "subpixel"]


def setting(env: dict[str, str], name: str) -> Any:
    """What the server in the image reads for a setting: the container's env, else the image's
    ENV, else the default; a relative path is the image's WORKDIR's."""
    raw = env.get(f"SR_{name.upper()}", image_env().get(f"SR_{name.upper()}"))
    value = Settings.model_fields[name].default if raw is None else getattr(Settings(**{name: raw}), name)
    if isinstance(value, Path):
        return PurePosixPath(image_workdir()) / value
    return value


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def secret_value(secret: dict[str, Any], key: str) -> str:
    assert "data" not in secret, "stringData keeps the placeholders readable"
    value: str = secret["stringData"][key]
    return value


def from_secret(objects: list[dict[str, Any]], container: dict[str, Any], name: str) -> str:
    """The value of an env var that must come from a Secret, never inline."""
    (var,) = [e for e in container["env"] if e["name"] == name]
    assert set(var) == {"name", "valueFrom"}, f"{name} must come from a Secret, not be written inline"
    ref = var["valueFrom"]["secretKeyRef"]
    return secret_value(named(objects, "Secret", ref["name"]), ref["key"])


def mount_of(container: dict[str, Any], path: PurePosixPath) -> dict[str, Any]:
    """The volume mount a path is written to: the deepest one holding it."""
    mounts = [m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on the container's root filesystem"
    return max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))


def storage_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, quantity
    return int(match.group(1)) * 1024 ** ["", "Ki", "Mi", "Gi", "Ti"].index(match.group(2) or "")


def most_replicas(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> int:
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"
            and o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
    return max([deployment["spec"].get("replicas", 1), *(h["spec"]["maxReplicas"] for h in hpas)])


def test_jobs_are_off_where_the_pods_could_not_share_them() -> None:
    # The base scales to several pods; jobs' default state, SQLite in each pod's own
    # SR_JOBS_DIR, would split the jobs between them (a poll on another pod: 404).
    objects = render(K8S)
    deployments = server_deployments(objects) + [load(GPU_DEPLOYMENT)]
    assert sum(most_replicas(objects, d) for d in deployments) > 1
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert setting(env_values(container), "jobs") is False, deployment["metadata"]["name"]
        assert not setting(env_values(container), "jobs_database_url")


def test_the_jobs_component_shares_the_job_state_and_files_between_every_pod() -> None:
    objects = render(OVERLAY)
    deployments = server_deployments(objects)
    # Both pools: components/jobs comes after components/gpu, whose Deployment it patches.
    assert {d["metadata"]["name"] for d in deployments} == {"subpixel", "subpixel-gpu"}
    pods_per_claim: dict[str, int] = {}
    job_settings = []
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_values(container)
        assert setting(env, "jobs") is True
        # The state: PostgreSQL (SQLite is one pod's), its URL from a Secret.
        assert urlsplit(from_secret(objects, container, "SR_JOBS_DATABASE_URL")).scheme == "postgresql"
        # The files: SR_JOBS_DIR on a writable volume (the root filesystem is read-only),
        # a claim every pod of both pools mounts.
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mount = mount_of(container, setting(env, "jobs_dir"))
        assert not mount.get("readOnly", False)
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        claim = volume["persistentVolumeClaim"]["claimName"]
        pods_per_claim[claim] = pods_per_claim.get(claim, 0) + most_replicas(objects, deployment)
        # The volume writable by the server's user; not chowned again at every start.
        assert pod["securityContext"]["fsGroup"] and pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
        # On SIGTERM the jobs go back to the queue as the drain begins (after the preStop
        # sleep; tests/test_jobs.py measures it), and the drain that follows fits the grace.
        drained = (float(container["lifecycle"]["preStop"]["exec"]["command"][1])
                   + setting(env, "request_timeout_s") + setting(env, "drain_delay_s"))
        assert pod["terminationGracePeriodSeconds"] > drained
        job_settings.append({n: setting(env, n) for n in Settings.model_fields if "job" in n})
    # One queue: the pools agree on its settings (SR_MAX_QUEUED_JOBS counts all replicas).
    assert all(s == job_settings[0] for s in job_settings)
    for claim, pods in pods_per_claim.items():
        spec = named(objects, "PersistentVolumeClaim", claim)["spec"]
        assert pods == 1 or "ReadWriteMany" in spec["accessModes"], f"{pods} pods on different nodes mount {claim}"
        # Room for a full queue of the largest uploads, beside the results.
        full_queue = job_settings[0]["max_queued_jobs"] * job_settings[0]["max_job_upload_bytes"]
        assert storage_bytes(spec["resources"]["requests"]["storage"]) > full_queue


def postgres(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return statefulset, container, env_values(container)


def test_the_job_database_url_reaches_the_shipped_postgres() -> None:
    objects = render(OVERLAY)
    statefulset, container, env = postgres(objects)
    (server, *_) = server_deployments(objects)
    url = urlsplit(from_secret(objects, server["spec"]["template"]["spec"]["containers"][0], "SR_JOBS_DATABASE_URL"))
    # The host is the StatefulSet's Service, which routes the URL's port to PostgreSQL's.
    service = named(objects, "Service", str(url.hostname))
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == (url.port or 5432)]
    (container_port,) = [p for p in container["ports"] if port["targetPort"] in (p["name"], p["containerPort"])]
    assert container_port["containerPort"] == 5432
    # The user, database and password PostgreSQL is created with.
    assert url.username == env["POSTGRES_USER"] and url.path == "/" + env["POSTGRES_DB"]
    assert url.password == from_secret(objects, container, "POSTGRES_PASSWORD")
    assert re.fullmatch(r"[0-9a-f]{32,}", url.password), "a placeholder that needs no escaping in the URL"


def test_postgres_is_hardened_and_keeps_its_data_on_its_own_volume() -> None:
    statefulset, container, env = postgres(render(OVERLAY))
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    # One primary: a second pod of this StatefulSet would be a second, empty database.
    assert spec["replicas"] == 1 and container["image"].startswith("postgres:")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 999  # the image's postgres
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == pod_spec(CPU_DEPLOYMENT)["containers"][0]["securityContext"]
    # The data in a folder of the claim's volume (its root may hold lost+found).
    (template,) = spec["volumeClaimTemplates"]
    data = mount_of(container, PurePosixPath(env["PGDATA"]))
    assert data["name"] == template["metadata"]["name"] and PurePosixPath(env["PGDATA"]) != PurePosixPath(data["mountPath"])
    # Read-only root: the socket and lock directory and /tmp are volumes.
    for path in ("/var/run/postgresql", "/tmp"):
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount_of(container, PurePosixPath(path))["name"]]
        assert volume == {"name": volume["name"], "emptyDir": {}}
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    # SIGTERM is PostgreSQL's smart shutdown, which waits for the server pods to disconnect.
    stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert stop[:2] == ["pg_ctl", "stop"] and stop[stop.index("-m") + 1] == "fast"


def test_the_database_is_no_server_pod() -> None:
    objects = render(OVERLAY)
    statefulset, container, _ = postgres(objects)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for obj in objects:
        if obj["kind"] in ("Service", "PodDisruptionBudget") and obj is not named(objects, "Service", "subpixel-postgres"):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert not selector.items() <= labels.items(), f"{key(obj)} selects the database's pod"
        if obj["kind"] == "ServiceMonitor":
            service_labels = named(objects, "Service", "subpixel-postgres")["metadata"]["labels"]
            assert not obj["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    # The server patch left the database alone.
    assert not [e for e in container["env"] if e["name"].startswith("SR_")]


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


def test_compose_keeps_the_jobs_on_one_named_volume() -> None:
    compose = load(REPO_ROOT / "docker-compose.yml")
    sources = set()
    for name in ("subpixel", "subpixel-gpu"):
        service = compose["services"][name]
        env = {k: str(v) for k, v in service["environment"].items()}
        assert setting(env, "jobs") is True and not setting(env, "jobs_database_url")  # SQLite, in the volume
        jobs_dir = str(setting(env, "jobs_dir"))
        mounts = [m.split(":") for m in service.get("volumes", [])]
        (mount,) = [m for m in mounts if m[1] == jobs_dir]
        assert mount[2:] in ([], ["rw"])
        sources.add(mount[0])
    # A named volume (survives restart, recreate and `down`), not a bind mount; one for every
    # replica on the host, so any of them answers for any job.
    (source,) = sources
    assert source in compose["volumes"] and "/" not in source and not source.startswith(".")


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


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """The last stage's instructions, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, args = line.strip().partition(" ")
            instructions.append((instruction.upper(), args.strip()))
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from + 1:]


def image_env() -> dict[str, str]:
    env = {}
    for instruction, args in dockerfile_final_stage():
        if instruction == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args))
    return env


def image_workdir() -> str:
    (*_, workdir) = [args for instruction, args in dockerfile_final_stage() if instruction == "WORKDIR"]
    return workdir


def test_the_image_gives_its_user_a_writable_jobs_dir_on_a_volume() -> None:
    stage = dockerfile_final_stage()
    jobs_dir = image_env()["SR_JOBS_DIR"]
    assert PurePosixPath(jobs_dir).is_absolute() and setting({}, "jobs_dir") == PurePosixPath(jobs_dir)
    (useradd,) = [args for instruction, args in stage if instruction == "RUN" and "useradd" in args]
    words = useradd.split("&&")[0].split()
    uid, user = words[words.index("--uid") + 1], words[-1]
    (user_at,) = [i for i, (instruction, args) in enumerate(stage) if instruction == "USER"]
    assert stage[user_at][1] == uid
    # Created, owned by the user, before USER; a VOLUME, so a named volume starts as its copy.
    owner = rf"(?:{uid}|{user})"
    made = [i for i, (instruction, args) in enumerate(stage) if instruction == "RUN" and (
        re.search(rf"install -d\b[^&;]* -o {owner}\b[^&;]* {re.escape(jobs_dir)}\b", args)
        or re.search(rf"chown (?:-R )?{owner}(?::\S+)? [^&;]*{re.escape(jobs_dir)}\b", args))]
    assert made and made[0] < user_at, f"no RUN gives {jobs_dir} to {user}"
    volumes = [json_or_words(args) for instruction, args in stage if instruction == "VOLUME"]
    assert any(jobs_dir in v for v in volumes)


def json_or_words(args: str) -> list[str]:
    words: list[str] = yaml.safe_load(args) if args.startswith("[") else args.split()
    return words


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
                 "subpixel.egg-info/PKG-INFO", ".pytest_cache/x", ".hypothesis/x", "bench-results/x",
                 "jobs/jobs.sqlite3", "jobs/data/x/input"):
        assert dockerignore_excludes(patterns, path), path


def test_no_deployment_file_is_git_ignored() -> None:
    # An ignored file is left out of `git add` without a word: the Component would be lost.
    files = [str(p.relative_to(REPO_ROOT)) for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    result = subprocess.run(["git", "check-ignore", "--no-index", "-v", "--", *files, "Dockerfile",
                             "docker-compose.yml", ".dockerignore"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    assert not result.stdout, f".gitignore hides deployment files (anchor the pattern, e.g. /jobs/):\n{result.stdout}"
