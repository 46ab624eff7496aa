"""Deployment files: Prometheus rules (real promtool), Grafana dashboard and alert provisioning
refer only to metrics the daemon exports, and the Grafana alerts mirror the Prometheus ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from memae_ts.connectors.metrics import EdgeMetrics
from prometheus_client import CollectorRegistry

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
    return set(re.findall(r"\b(memae_ts_[a-z0-9_]+|up)\b", expr))


@pytest.mark.prometheus
def test_promtool_checks_the_alert_rules(promtool_bin):
    out = subprocess.run([str(promtool_bin), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_alert_rules(promtool_bin):
    out = subprocess.run(
        [str(promtool_bin), "test", "rules", "memae-ts-alerts.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
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


UNIT = DEPLOY / "systemd" / "memae-ts-edge.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_rates_the_unit_at_most_2_0():
    """The shipped unit as `systemd-analyze security` sees it (exposure 0 = locked down, 10 =
    exposed); the unit before issue #14 rated 8.5 "EXPOSED"."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
    assert exposure is not None, out.stdout + out.stderr
    assert float(exposure.group(1)) <= 2.0 and out.returncode == 0, out.stdout


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "ms": 0.001}
    match = re.fullmatch(r"(\d+)(s|min|ms)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


def test_the_unit_outlasts_the_flush_and_keeps_secrets_out_of_the_config():
    from memae_ts.edge.config import EdgeConfig

    unit = unit_settings()
    processing = EdgeConfig.load(None, {}).processing
    # A stop during a broker outage may wait for the flush and then the commit (15 s).
    assert seconds(unit["TimeoutStopSec"][0]) > processing.flush_timeout_seconds + 15
    assert seconds(unit["WatchdogSec"][0]) > processing.flush_timeout_seconds + 15
    assert unit["Type"] == ["notify"]
    assert unit["DynamicUser"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    assert "TasksMax" in unit and "SystemCallFilter" in unit
    # The credential the unit loads is the file the example config reads the password from.
    (credential,) = unit["LoadCredential"]
    example = (DEPLOY / "edge.example.toml").read_text()
    name = credential.split(":", 1)[0]
    assert re.search(rf'^sasl_plain_password_file = "{re.escape(name)}"', example, re.M)
    assert not re.search(r"^sasl_plain_password = ", example, re.M)
    assert "MEMAE_TS_KAFKA_GROUP_INSTANCE_ID=%H" in unit["Environment"]


def test_examples_bind_the_endpoint_to_loopback():
    from memae_ts.edge.config import EdgeConfig

    assert EdgeConfig.load(None, {}).http.host == "127.0.0.1"
    assert re.search(r'^host = "127\.0\.0\.1"', (DEPLOY / "edge.example.toml").read_text(), re.M)
