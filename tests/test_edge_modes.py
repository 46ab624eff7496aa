"""The edge daemon's operating modes, novelty and drift following, against the real broker.

The daemon scores with the same MemoryScorer (and the same C++ engine) as `memae-ts score`, so
every record's `mode` and `novelty_score` equal the offline columns; with `follow_drift` on, the
Prometheus counters account for every window, the drift gauge stays within its cap, and SIGHUP
with an unchanged bundle puts back the trained memory.
"""

from __future__ import annotations

import signal
import time

import pandas as pd
import pytest
from memae_ts.edge.replay import read_messages
from test_edge_kafka import by_ts, metric, offline_scores, produce, wait_count

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


def test_mode_and_novelty_fields_equal_offline(kafka_broker, kafka_names, edge_data, edge_daemons):
    offline = offline_scores(edge_data)
    assert {"mode", "novelty_score"} <= set(offline.columns)  # the fixture's bundle has modes
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    edge_daemons().start()
    produce(kafka_broker.bootstrap, kafka_names.input, list(read_messages(edge_data.csv)))
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    live = by_ts(records)
    assert set(live) == set(offline.timestamp)
    for row in offline.itertuples():
        for rec in live[row.timestamp]:
            want_mode = None if pd.isna(row.mode) else int(row.mode)
            assert rec["mode"] == want_mode, row.timestamp
            assert rec["novelty_score"] == pytest.approx(row.novelty_score, rel=1e-5, abs=1e-9), row.timestamp
            assert rec["is_anomaly"] == bool(row.is_anomaly) or abs(row.normalised_score - 1) < 1e-4


def test_drift_following_is_counted_bounded_and_reset_by_sighup(
    kafka_broker, kafka_names, edge_data, edge_daemons
):
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    follow = {"follow_drift": True, "follow_rate": 0.05, "follow_warmup": 10.0}
    daemon = edge_daemons(config={"model": follow}).start()
    produce(kafka_broker.bootstrap, kafka_names.input, list(read_messages(edge_data.csv)))
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline))
    assert len(records) == len(offline)
    deadline = time.monotonic() + 20
    while metric(daemon, "memae_ts_windows_scored_total") < len(offline):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    used = metric(daemon, "memae_ts_memory_follow_windows_total", model="default", outcome="used")
    refused = metric(daemon, "memae_ts_memory_follow_windows_total", model="default", outcome="refused")
    assert used + refused == len(offline)
    assert used > 0 and refused > 0  # the day has faults: those windows never teach the memory
    applied = metric(daemon, "memae_ts_memory_updates_total", model="default")
    assert applied + metric(daemon, "memae_ts_memory_updates_rejected_total", model="default") > 0
    drift = metric(daemon, "memae_ts_memory_drift_ratio", model="default")
    assert 0 <= drift <= 0.25 + 1e-9 and (drift > 0) == (applied > 0)

    daemon.send(signal.SIGHUP)  # the bundle is unchanged: the memory goes back to the trained one
    deadline = time.monotonic() + 20
    while metric(daemon, "memae_ts_memory_resets_total", model="default") < 1:
        assert time.monotonic() < deadline, daemon.logs()[-2000:]
        time.sleep(0.2)
    assert metric(daemon, "memae_ts_memory_drift_ratio", model="default") == 0.0
    assert daemon.stop(timeout=10) == 0
