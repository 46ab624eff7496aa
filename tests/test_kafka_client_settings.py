"""The daemon's Kafka client settings against the real broker.

`[kafka] commit_interval_ms`: the daemon commits at most that often, and still commits what it
has done before a stop and before it gives partitions away. `fetch_wait_max_ms` /
`fetch_min_bytes` reach the consumer: an idle consumer sends one fetch per wait.

Why the key exists: every commit is a request the broker writes to its offsets log, and a daemon
that commits after every poll sends hundreds a second at moderate rates (bench/stream.py
--variants, docs/edge.md section 5). Why these tests: with an interval, readings processed since
the last commit are pending at any moment; a stop or a revocation that dropped them would make
the next owner score them again (duplicates) — at-least-once allows that after a crash, never
after a clean hand-over.
"""

from __future__ import annotations

import json
import time

import pytest
from memae_ts.connectors.kafka_source import KafkaSource
from test_edge_kafka import (
    assert_matches_offline,
    committed_all,
    four_assets_csv,
    join_replay,
    metric,
    offline_scores,
    wait_count,
)

pytestmark = pytest.mark.kafka

LONG = {"kafka": {"commit_interval_ms": 60_000}}  # no timed commit within a test


def test_an_interval_holds_commits_back_and_a_stop_commits_the_rest(
    kafka_broker, kafka_names, edge_data, edge_daemons, replays
):
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    first = edge_daemons("edge-1", batch_size=20, config=LONG).start()
    join_replay(replays(kafka_broker.bootstrap, kafka_names.input, edge_data.csv, rate=600))
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=90)
    assert_matches_offline(records, offline)
    assert len(records) == len(offline)
    # Dozens of polls of 20 readings, no commit yet: the score records went out without one,
    # each poll's acknowledged (and its end-to-end latency observed) before the next poll.
    deadline = time.monotonic() + 5  # the last poll's ack is counted just after it is visible
    while metric(first, "memae_ts_scores_published_total") < len(offline) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(first, "memae_ts_scores_published_total") == len(offline)
    assert metric(first, "memae_ts_end_to_end_latency_seconds_count") == len(offline)
    assert metric(first, "memae_ts_offset_commits_total") == 0
    committed, end = committed_all(kafka_broker.bootstrap, kafka_names.input, kafka_names.group)
    assert committed[0] is None and end[0] >= len(offline)
    assert first.stop() == 0  # SIGTERM: the stop commits what was done
    committed, end = committed_all(kafka_broker.bootstrap, kafka_names.input, kafka_names.group)
    assert committed == end
    second = edge_daemons("edge-2", batch_size=20, config=LONG).start()
    second.wait_event("partitions assigned")
    time.sleep(2.0)  # it rebuilds its windows from the rebuild point and scores nothing again
    assert metric(second, "memae_ts_windows_scored_total") == 0
    assert len(wait_count(kafka_broker.bootstrap, kafka_names.output, len(offline) + 1, timeout=3)) == len(
        offline
    )


def test_partitions_given_away_are_committed_first_so_the_new_owner_scores_nothing_twice(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path, replays
):
    kafka_broker.create_topic(kafka_names.input, partitions=4)
    assets, multi, offline = four_assets_csv(edge_data, tmp_path, 120)
    csv = tmp_path / "four.csv"
    multi.to_csv(csv, index=False)
    expected = len(assets) * len(offline)
    a = edge_daemons("edge-a", batch_size=20, config=LONG).start()
    join_replay(replays(kafka_broker.bootstrap, kafka_names.input, csv, rate=600))
    assert len(wait_count(kafka_broker.bootstrap, kafka_names.output, expected, timeout=90)) == expected
    assert metric(a, "memae_ts_offset_commits_total") == 0  # everything a did is pending
    b = edge_daemons("edge-b", batch_size=20, config=LONG).start()
    b.wait_event("partitions assigned", lambda e: len(e["partitions"]) == 2)
    time.sleep(2.0)  # b has read its partitions from the committed offsets on
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, expected + 1, timeout=3)
    assert len(records) == expected, "b scored readings a had scored: a gave them away uncommitted"
    for asset in assets:
        assert_matches_offline(records, offline, asset=asset)
    assert metric(a, "memae_ts_offset_commits_total") >= 1  # the revocation's checkpoint
    assert metric(b, "memae_ts_windows_scored_total") == 0


class _Counting(KafkaSource):
    """Keeps librdkafka's latest statistics (their per-broker request counts)."""

    fetches = 0

    def _on_statistics(self, text: str) -> None:
        stats = json.loads(text)
        self.fetches = sum(b.get("req", {}).get("Fetch", 0) for b in stats["brokers"].values())
        super()._on_statistics(text)


def test_the_fetch_wait_reaches_the_consumer(kafka_broker, kafka_names) -> None:
    """On an idle topic the broker holds each fetch for fetch_wait_max_ms (nothing reaches
    fetch_min_bytes): 100 ms means about ten fetches a second, 2000 ms one every two seconds."""
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    sources = {
        wait: _Counting(
            {"bootstrap_servers": [kafka_broker.bootstrap]},
            kafka_names.input,
            f"{kafka_names.group}-{wait}",
            fetch_wait_max_ms=wait,
            fetch_min_bytes=1_000_000,
            rebalance_stuck_s=3.0,  # statistics every 500 ms
        )
        for wait in (100, 2000)
    }
    try:
        deadline = time.monotonic() + 60
        while not all(s.assigned for s in sources.values()):
            assert time.monotonic() < deadline, "no partition assigned in 60 s"
            for s in sources.values():
                assert len(s.poll(50)) == 0
        time.sleep(1.0)  # both fetching; a statistics report each
        for s in sources.values():
            s.poll(0)
        before = {wait: s.fetches for wait, s in sources.items()}
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            for s in sources.values():
                assert len(s.poll(50)) == 0
        time.sleep(0.6)
        for s in sources.values():
            s.poll(0)
        sent = {wait: s.fetches - before[wait] for wait, s in sources.items()}
        assert sent[100] >= 15, sent  # ~40 in 4 s
        assert sent[2000] <= 4, sent  # ~2
    finally:
        for s in sources.values():
            s.close()
