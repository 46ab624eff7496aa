"""Deployment files: Prometheus rules (real promtool), Grafana dashboard and alert provisioning
refer only to metrics the daemon exports, and the Grafana alerts mirror the Prometheus ones."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from connectors.metrics import EdgeMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "edge" / "deploy"
RULES = DEPLOY / "prometheus" / "memae-ts-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "memae-ts-edge.json"
GRAFANA_ALERTS = DEPLOY / "grafana" / "provisioning" / "alerting" / "memae-ts-alerts.json"


def exported_names() -> set[str]:
    reg = CollectorRegistry()
    EdgeMetrics(reg)
    names = {"up"}
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
    for family in reg.collect():  # labelled series have no samples yet: use family types
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(memae_ts_[a-z_]+|up)\b", expr))


@pytest.mark.prometheus
def test_promtool_checks_the_alert_rules(promtool_bin):
    out = subprocess.run([str(promtool_bin), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_alert_rules(promtool_bin):
    out = subprocess.run(
        [str(promtool_bin), "test", "rules", "memae-ts-alerts.test.yml"],
        cwd=RULES.parent, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def dashboard_exprs() -> dict[str, list[str]]:
    dash = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dash["panels"]}


def test_dashboard_queries_use_exported_metrics_only():
    exported = exported_names()
    exprs = dashboard_exprs()
    for wanted in ("Normalised anomaly score", "Throughput", "Consumer lag", "Latency", "Anomalous windows"):
        assert wanted in exprs
    for title, queries in exprs.items():
        for q in queries:
            names = metric_names(q)
            assert names, (title, q)
            assert names <= exported, (title, names - exported)


def test_grafana_alerts_mirror_the_prometheus_alerts():
    rules_text = RULES.read_text()
    prom_alerts = set(re.findall(r"- alert: (\w+)", rules_text))
    provisioning = json.loads(GRAFANA_ALERTS.read_text())
    assert provisioning["apiVersion"] == 1
    rules = [r for g in provisioning["groups"] for r in g["rules"]]
    assert {r["title"] for r in rules} == prom_alerts
    exported = exported_names()
    for rule in rules:
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        queries = [d["model"]["expr"] for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        assert queries and all(metric_names(q) <= exported for q in queries), rule["title"]
