"""Builds deploy/k8s/components/monitoring/prometheusrule.yaml from alerts.yml, the one source.

    python deploy/prometheus/prometheusrule.py          # rewrite the PrometheusRule
    python deploy/prometheus/prometheusrule.py --check  # exit 1 if it is stale (the tests do this)

alerts.yml is what Prometheus loads in compose and what promtool and tests/test_prometheus.py
check; the Prometheus Operator reads the same groups from a PrometheusRule object.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path(__file__).parent / "alerts.yml"
OUT = Path(__file__).parents[1] / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/prometheusrule.py: edit those.
# A Prometheus loads it only if its ruleSelector matches these labels (kube-prometheus-stack:
# add its `release` label in an overlay, or let it select all).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line expressions stay readable block scalars, as in alerts.yml.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def build() -> str:
    alerts: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "subpixel", "labels": {"app.kubernetes.io/name": "subpixel"}},
        "spec": {"groups": alerts["groups"]},
    }
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=4096)


def main() -> int:
    text = build()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python deploy/prometheus/prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
