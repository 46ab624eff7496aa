"""The daemon's Prometheus exposition: names, pre-created series, and the real promtool."""

from __future__ import annotations

import subprocess

import pytest
from memae_ts.connectors.messages import REASONS
from memae_ts.connectors.metrics import EdgeMetrics
from prometheus_client import CollectorRegistry, generate_latest


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
    info = {"model": "default", "version": "abc", "sensors": "p,t", "window": "32", "engine": "numpy"}
    assert sample(reg, "memae_ts_model_info", **info) == 1


def test_revoked_partitions_and_assets_leave_no_stale_series():
    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.set_lag({0: 5, 1: 7})
    m.observe_score("pump-7", 0.5, 1.25, True)
    m.forget_partitions([1])
    m.observe_readings("pump-7", "pumps", 3, 1000.0, {"p": 1, "t": 0}, now=2000.0)
    m.observe_readings("pump-8", "pumps", 2, 1000.0, None, now=2000.0)
    m.set_score_p95("pump-7", "pumps", 0.8)
    m.forget_assets(["pump-7"])
    assert sample(reg, "memae_ts_consumer_lag_messages", partition="0") == 5
    assert sample(reg, "memae_ts_consumer_lag_messages", partition="1") is None
    assert sample(reg, "memae_ts_anomaly_score_normalised", asset="pump-7") is None
    # A revoked asset's last-seen time must not stay behind to make it look silent here.
    assert sample(reg, "memae_ts_asset_last_seen_timestamp_seconds", asset="pump-7", model="pumps") is None
    assert sample(reg, "memae_ts_anomaly_score_normalised_p95", asset="pump-7", model="pumps") is None
    assert sample(reg, "memae_ts_asset_last_seen_timestamp_seconds", asset="pump-8", model="pumps") == 2000.0
    # Counters stay: rate() across daemons needs them.
    assert sample(reg, "memae_ts_out_of_range_readings_total", asset="pump-7", model="pumps", sensor="p") == 1
    assert sample(reg, "memae_ts_out_of_range_readings_total", asset="pump-7", model="pumps", sensor="t") == 0
    assert sample(reg, "memae_ts_asset_readings_total", asset="pump-8", model="pumps") == 2


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition(promtool_bin):
    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.set_model("abc", ["p", "t"], 32, "numpy", "pumps", training_end=1.7e9, range_known=True)
    m.model_failed("fans")
    m.observe_score("pump-7", 0.5, 1.25, True)
    m.observe_readings("pump-7", "pumps", 3, 1000.0, {"p": 1, "t": 0}, now=2000.0)
    m.set_score_p95("pump-7", "pumps", 0.8)
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
