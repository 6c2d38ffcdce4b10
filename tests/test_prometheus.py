"""A real Prometheus scrapes a real server; every dashboard query and alert runs through it.

Needs the `prometheus` binary (Debian package `prometheus`; `.ci/run` and `make test` install
it when they can). Without it the test is skipped, unless SR_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.config import Settings

from .helpers import REPO_ROOT, SHIPPED_STORE, LiveServer, free_port, image_bytes, wait_until

DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and os.environ.get("SR_REQUIRE_PROMETHEUS") != "1",
    reason="prometheus is not installed (Debian package `prometheus`)",
)


def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "subpixel.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def alert_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


@needs_prometheus
def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    assert PROMTOOL is not None
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run([PROMTOOL, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_json_is_built_from_its_code() -> None:
    result = subprocess.run(["python", str(DEPLOY / "grafana" / "dashboard.py"), "--check"])
    assert result.returncode == 0, "run: python deploy/grafana/dashboard.py"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, str]]:
    assert PROMETHEUS is not None
    with LiveServer(Settings(model_store=SHIPPED_STORE, device="cpu", calibrate=False)) as service:
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
        job = config["scrape_configs"][0]
        job.pop("dns_sd_configs")  # compose's DNS name -> this test's port
        job["static_configs"] = [{"targets": [f"127.0.0.1:{service.port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        prom = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _get(prom + "/-/ready") == 200, timeout_s=60, interval_s=0.2)
            yield service.url, prom
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _query(prom: str, expr: str) -> dict[str, Any]:
    # Grafana's $__rate_interval is a dashboard variable; Prometheus needs a real range.
    response = httpx.get(prom + "/api/v1/query", params={"query": expr.replace("$__rate_interval", "30s")})
    body: dict[str, Any] = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body


def _scrapes(prom: str) -> float:
    body = _query(prom, 'count_over_time(up{job="subpixel"}[1m])')
    results = body["data"]["result"]
    return float(results[0]["value"][1]) if results else 0.0


@needs_prometheus
def test_every_panel_and_alert_works_against_real_prometheus(stack: tuple[str, str]) -> None:
    service, prom = stack
    wait_until(lambda: _scrapes(prom) >= 2, timeout_s=30, interval_s=0.5)
    with httpx.Client(base_url=service, timeout=60) as client:
        for method in ("nearest", "bilinear", "bicubic", "espcn", "deconv"):
            for fmt in ("png", "jpeg", "webp"):
                r = client.post(f"/v1/upscale?scale=2&method={method}&format={fmt}", content=image_bytes(),
                                headers={"Content-Type": "image/png"})
                assert r.status_code == 200
        assert client.post("/v1/upscale", content=b"not an image").status_code == 400
        assert client.post("/v1/upscale?scale=9", content=image_bytes()).status_code == 422
    # Let Prometheus see the counters move: two scrapes after the traffic.
    seen = _scrapes(prom)
    wait_until(lambda: _scrapes(prom) >= seen + 3, timeout_s=30, interval_s=0.5)

    missing = []
    for title, expr in dashboard_targets():
        result = _query(prom, expr)["data"]["result"]
        cuda_only = "sr_device_memory_bytes" in expr
        if not result and not cuda_only:
            missing.append(f"{title}: {expr}")
    assert not missing, "panels without data:\n" + "\n".join(missing)

    for _name, expr in alert_rules():
        _query(prom, expr)  # evaluates without error
    # And Prometheus's own rule evaluation reports every rule healthy.
    wait_until(lambda: _rules_evaluated(prom), timeout_s=30, interval_s=0.5)
    rules = httpx.get(prom + "/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {name for name, _ in alert_rules()}
    assert all(r["health"] == "ok" for r in rules), rules


def _rules_evaluated(prom: str) -> bool:
    groups = httpx.get(prom + "/api/v1/rules").json()["data"]["groups"]
    return bool(groups) and all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"
                                for r in groups[0]["rules"])
