"""Builds deploy/grafana/dashboards/subpixel.json: the dashboard as code, in plain Python.

    python deploy/grafana/dashboard.py          # rewrite the JSON
    python deploy/grafana/dashboard.py --check  # exit 1 if the JSON is stale (the tests do this)

Every panel's queries are run against a real Prometheus by tests/test_prometheus.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "subpixel.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def q(quantile: float, family: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({family}_bucket[$__rate_interval])))"


# (title, unit, [(legend, expr)], kind)
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Requests by status", "reqps",
     [("{{status}}", "sum by (status) (rate(sr_requests_total[$__rate_interval]))")], "timeseries"),
    ("Request latency", "s",
     [(f"p{int(p * 100)}", q(p, "sr_request_duration_seconds")) for p in (0.5, 0.95, 0.99)], "timeseries"),
    ("Queue depth and requests in flight", "short",
     [("tiles queued", "sum(sr_queue_depth)"), ("requests in flight", "sum(sr_inflight_requests)"),
      ("admission limit", "sum(sr_admission_limit)")], "timeseries"),
    ("Queue wait", "s",
     [(f"p{int(p * 100)}", q(p, "sr_queue_wait_seconds")) for p in (0.5, 0.95, 0.99)], "timeseries"),
    ("Batch size (tiles)", "short",
     [("mean", "sum(rate(sr_batch_size_sum[$__rate_interval])) / sum(rate(sr_batch_size_count[$__rate_interval]))"),
      ("p95", q(0.95, "sr_batch_size"))], "timeseries"),
    ("Batch size distribution", "short",
     [("{{le}}", "sum by (le) (increase(sr_batch_size_bucket[$__rate_interval]))")], "heatmap"),
    ("Inference time per batch", "s",
     [("p50 {{method}} x{{scale}}", q(0.5, "sr_inference_duration_seconds", "method, scale")),
      ("p95 {{method}} x{{scale}}", q(0.95, "sr_inference_duration_seconds", "method, scale"))], "timeseries"),
    ("Output megapixels/s", "short",
     [("{{method}} x{{scale}}",
       "sum by (method, scale) (rate(sr_output_pixels_total[$__rate_interval])) / 1e6")], "timeseries"),
    ("Rejections by reason", "reqps",
     [("{{reason}}", "sum by (reason) (rate(sr_rejected_requests_total[$__rate_interval]))")], "timeseries"),
    ("Encode time by format (p95)", "s",
     [("{{format}}", q(0.95, "sr_encode_duration_seconds", "format"))], "timeseries"),
    ("Decode time (p50, p95)", "s",
     [("p50", q(0.5, "sr_decode_duration_seconds")), ("p95", q(0.95, "sr_decode_duration_seconds"))],
     "timeseries"),
    ("Memory", "bytes",
     [("device {{device}} {{kind}}", "sum by (device, kind) (sr_device_memory_bytes)"),
      ("process RSS {{instance}}", "process_resident_memory_bytes{job=\"subpixel\"}")], "timeseries"),
    ("Models", "none",
     [("", "sr_model_info")], "table"),
    ("Ready", "none",
     [("{{instance}}", "sr_ready")], "stat"),
]


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str) -> dict[str, Any]:
    width, height = 12, 8
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": (index % 2) * width, "y": (index // 2) * height, "w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                **({"format": "table", "instant": True} if kind == "table" else {}),
            }
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "subpixel",
        "title": "subpixel: super-resolution service",
        "tags": ["subpixel", "inference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": []},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
    print(f"wrote {OUT}")
