"""Scraping, gates, dashboards and routing for the Prometheus Operator and Grafana's sidecar.

- ``PodMonitor``: the exporter sidecars (port ``metrics``), with ``job="soak-exporter"`` as the
  local Prometheus config has it (the exporter_down gate reads ``up{job="soak-exporter"}``).
- ``PrometheusRule``: ``alerts.generate.rules()``, the groups of ``alerts/rules.yml`` as they
  are; thresholds are ``soak_gate_threshold`` series served by every sidecar (``--profile``).
- the dashboards (``grafana/dashboards/*.json``) as one ConfigMap labelled ``grafana_dashboard: "1"``.
- the Alertmanager routing (``alerts.generate.alertmanager()``) as a Secret holding
  ``alertmanager.yaml``, for an ``Alertmanager`` resource's ``configSecret`` or to merge by hand
  (docs/kubernetes.md): the operator's own ``AlertmanagerConfig`` CRD is not vendored here, so
  it could not be validated offline.

These objects are namespace-wide (one per namespace, whatever the topology): two rule files
would evaluate every recording rule twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alerts.generate import DEFAULT_RUNBOOK_BASE_URL, alertmanager, rules
from soakk8s.model import APP, K8sSettings, meta

DASHBOARDS = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
JOB = "soak-exporter"
SCRAPE_INTERVAL = "5s"   # as the compose Prometheus: rate() windows of the gates fit it


def _labels(s: K8sSettings, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component, **(extra or {})}


def pod_monitor(s: K8sSettings) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": meta(f"{s.prefix}-exporters", s, {**s.labels(component="monitor"), **s.monitor_labels}),
            "spec": {"selector": {"matchLabels": {k: v for k, v in s.labels().items() if "run-id" not in k}},
                     "podMetricsEndpoints": [{
                         "port": "metrics", "path": "/metrics", "interval": SCRAPE_INTERVAL, "honorLabels": True,
                         "relabelings": [{"action": "replace", "targetLabel": "job", "replacement": JOB}]}]}}


def prometheus_rule(s: K8sSettings, runbook_base: str = DEFAULT_RUNBOOK_BASE_URL) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": meta("soak-gates", s, _labels(s, "rules", s.monitor_labels)),
            "spec": {"groups": rules(runbook_base)["groups"]}}


def dashboards(s: K8sSettings) -> dict[str, Any]:
    data = {p.name: p.read_text() for p in sorted(DASHBOARDS.glob("*.json"))}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta("soak-dashboards", s, _labels(s, "dashboards", {"grafana_dashboard": "1"})),
            "data": data}


def alertmanager_config(s: K8sSettings) -> dict[str, Any]:
    text = yaml.safe_dump(alertmanager(s.webhook_url), sort_keys=False, width=1000)
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta("soak-alertmanager", s, _labels(s, "alerting")),
            "stringData": {"alertmanager.yaml": text}}
