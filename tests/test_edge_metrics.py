"""The daemon's Prometheus exposition: names, pre-created series, and the real promtool."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from connectors.messages import REASONS
from connectors.metrics import EdgeMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_series_exist_at_zero_before_anything_happens():
    reg = CollectorRegistry()
    EdgeMetrics(reg)
    assert sample(reg, "memae_ts_readings_total") == 0
    assert sample(reg, "memae_ts_windows_scored_total") == 0
    for reason in REASONS:
        assert sample(reg, "memae_ts_invalid_messages_total", reason=reason) == 0
    assert sample(reg, "memae_ts_model_reloads_total", result="error") == 0


def test_scores_per_asset_and_anomaly_counting():
    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.set_model("abc", ["p", "t"], 32, "numpy")
    m.observe_score("pump-7", 0.5, 1.25, True)
    m.observe_score("pump-7", 0.1, 0.25, False)
    m.observe_score("pump-8", 0.2, 0.5, False)
    assert sample(reg, "memae_ts_anomaly_score", asset="pump-7") == 0.1
    assert sample(reg, "memae_ts_anomaly_score_normalised", asset="pump-7") == 0.25
    assert sample(reg, "memae_ts_anomaly_active", asset="pump-7") == 0
    assert sample(reg, "memae_ts_anomalies_total", asset="pump-7") == 1
    assert sample(reg, "memae_ts_anomalies_total", asset="pump-8") == 0
    assert sample(reg, "memae_ts_model_info", version="abc", sensors="p,t", window="32", engine="numpy") == 1


def test_revoked_partitions_and_assets_leave_no_stale_series():
    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.set_lag({0: 5, 1: 7})
    m.observe_score("pump-7", 0.5, 1.25, True)
    m.forget_partitions([1])
    m.forget_assets(["pump-7"])
    assert sample(reg, "memae_ts_consumer_lag_messages", partition="0") == 5
    assert sample(reg, "memae_ts_consumer_lag_messages", partition="1") is None
    assert sample(reg, "memae_ts_anomaly_score_normalised", asset="pump-7") is None


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition(promtool_bin):
    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.set_model("abc", ["p", "t"], 32, "numpy")
    m.observe_score("pump-7", 0.5, 1.25, True)
    m.inference.observe(0.003)
    m.end_to_end.observe(0.02)
    m.set_lag({0: 3})
    m.invalid.labels(reason="bad_json").inc()
    result = subprocess.run(
        [str(promtool_bin), "check", "metrics"], input=generate_latest(reg), capture_output=True
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    # promtool prints naming problems (e.g. a counter without _total) but may still exit 0
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""
