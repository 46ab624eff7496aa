"""The alarm rule in the edge daemon against a real Kafka broker: on two machines with a time
gap and missing values, the daemon's alarm flags, tail probabilities and episode records
(opened/closed on the episodes topic) equal `memae-ts score --episodes` of the same rows."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from edge_process import read_topic
from kafka import KafkaProducer
from kafka_service import REPO
from memae_ts.edge.replay import read_messages, replay

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


def messy_two_machines(csv: Path, out: Path) -> pd.DataFrame:
    """The plant CSV as two machines: pump-b lacks 25 minutes in its busiest stretch, pump-a
    has short dropouts (filled) and a long one (the series restarts); interleaved in time."""
    frame = pd.read_csv(csv).drop(columns=["anomaly"])
    sensors = [c for c in frame.columns if c != "timestamp"]
    a = frame.assign(asset="pump-a")
    b = frame.assign(asset="pump-b")
    b[sensors] = b[sensors] * 1.002  # not the same numbers as pump-a
    a.loc[50:51, sensors[1]] = np.nan
    a.loc[300:310, sensors[2]] = np.nan
    b = b.drop(index=range(380, 405))
    multi = pd.concat([a, b]).sort_values("timestamp", kind="stable")
    multi.to_csv(out, index=False)
    return multi


def score_with_episodes(model: Path, csv: Path, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`memae-ts score --episodes` of a CSV with an asset column: the scored rows and the
    episodes (also used by the MQTT episode test, tests/test_edge_mqtt.py)."""
    scores_csv, episodes_csv = tmp_path / "s.csv", tmp_path / "e.csv"
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "score", str(model), str(csv), "--asset-column",
         "asset", "-o", str(scores_csv), "--episodes", str(episodes_csv)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return pd.read_csv(scores_csv).dropna(subset=["score"]), pd.read_csv(episodes_csv)


def assert_episodes_equal(bodies: list[dict], offline_episodes: pd.DataFrame) -> None:
    """Every offline episode was opened live; those that ended were closed with the same
    record (end, windows, reason, peak and its time, top sensor)."""
    opened = {(b["asset"], b["start"]) for b in bodies if b["event"] == "opened"}
    closed = {
        (b["asset"], b["start"]): (b["end"], b["windows"], b["end_reason"], b["peak_time"])
        for b in bodies
        if b["event"] == "closed"
    }
    peaks = {(b["asset"], b["start"]): b["peak"] for b in bodies if b["event"] == "closed"}
    assert opened == set(zip(offline_episodes.asset, offline_episodes.start, strict=True))
    ended = [e for e in offline_episodes.itertuples() if e.end_reason != "open"]
    assert closed == {(e.asset, e.start): (e.end, e.windows, e.end_reason, e.peak_time) for e in ended}
    top = {(b["asset"], b["start"]): b["top_sensors"][0]["sensor"] for b in bodies if b["event"] == "closed"}
    for e in ended:
        assert peaks[(e.asset, e.start)] == pytest.approx(e.peak, rel=1e-5)
        assert top[(e.asset, e.start)] == e.top_sensors.split(":")[0]


def test_daemon_alarms_and_episodes_equal_offline(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path
):
    csv = tmp_path / "messy.csv"
    multi = messy_two_machines(edge_data.csv, csv)
    offline, offline_episodes = score_with_episodes(edge_data.model, csv, tmp_path)
    assert set(offline_episodes.asset) == {"pump-a", "pump-b"}, offline_episodes  # the faults alarm
    assert offline.alarm.sum() > 0 and offline.tail_probability.notna().all()

    episodes_topic = kafka_names.output + ".episodes"
    kafka_broker.create_topic(kafka_names.input, partitions=2)
    edge_daemons(batch_size=13, config={"kafka": {"episodes_topic": episodes_topic}}).start()
    sensors = [c for c in multi.columns if c not in ("timestamp", "asset")]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=5)
    try:
        replay(list(read_messages(csv, asset_column="asset", sensors=sensors)), producer, kafka_names.input)
    finally:
        producer.close()

    records = read_topic(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=90)
    assert len(records) == len(offline)
    live = {(r.json()["asset"], r.json()["ts"]): r.json() for r in records}
    for row in offline.itertuples():
        rec = live[(row.asset, row.timestamp)]
        assert rec["score"] == pytest.approx(row.score, rel=1e-5, abs=1e-9)
        assert rec["alarm"] == bool(row.alarm), (row.asset, row.timestamp)
        assert rec["tail_probability"] == pytest.approx(row.tail_probability, rel=1e-4)

    # Every offline episode was opened live; those that ended were closed with the same record.
    n_closed = int((offline_episodes.end_reason != "open").sum())
    events = read_topic(kafka_broker.bootstrap, episodes_topic, len(offline_episodes) + n_closed, timeout=30)
    bodies = [r.json() for r in events]
    assert all(r.key == b["asset"].encode() for r, b in zip(events, bodies, strict=True))
    assert_episodes_equal(bodies, offline_episodes)


def _committed_through(bootstrap: str, topic: str, group: str, n: int, timeout: float = 60.0) -> None:
    """Wait until ``group`` has committed ``n`` readings of ``topic`` in all (admin client: a
    consumer in the daemon's group would take part in its rebalances)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or [])]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = admin.list_group_offsets({group: parts}).get(group, {})
            if sum(max(0, c.offset) for c in committed.values()) >= n:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{group} did not commit {n} readings of {topic}")
    finally:
        probe.close()
        admin.close()


def _metric(text: str, name: str, **labels: str) -> float:
    want = "".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want if want else "")) and not line.startswith("#"):
            return float(line.rpartition(" ")[2])
    raise KeyError(name)


@pytest.mark.parametrize(
    ("delivery", "how"),
    [("at-least-once", "sigkill"), ("exactly-once", "sigkill"), ("at-least-once", "handover")],
)
def test_a_fault_spanning_a_sigkill_and_restart_is_one_episode(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path, delivery, how
):
    """The daemon is SIGKILLed in the middle of pump-a's longest fault episode (alarm on) and a
    new one takes over (``handover``: a second gateway joins the group and the first stops, so
    the partitions move in rebalances): the alarm history is that of offline scoring of the same
    rows, as if nothing had happened: one ``opened`` and one ``closed`` record with the same
    episode_id, the episode's full length and peak, the same alarm flag on every score record.
    (Before the alarm state was kept, the new daemon opened a second episode k windows later
    and never closed the first.)"""
    csv = tmp_path / "messy.csv"
    multi = messy_two_machines(edge_data.csv, csv)
    scores_csv, episodes_csv = tmp_path / "s.csv", tmp_path / "e.csv"
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "score", str(edge_data.model), str(csv), "--asset-column",
         "asset", "-o", str(scores_csv), "--episodes", str(episodes_csv)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    offline = pd.read_csv(scores_csv).dropna(subset=["score"])
    offline_episodes = pd.read_csv(episodes_csv)
    eps = offline_episodes
    a_eps = eps[(eps.asset == "pump-a") & (eps.end_reason == "cleared")]
    longest = a_eps.sort_values("windows").iloc[-1]
    assert longest.windows >= 6, offline_episodes
    start, end = pd.Timestamp(longest.start), pd.Timestamp(longest.end)
    cut = start + (end - start) / 2  # the kill falls inside the episode, the alarm on
    stamps = pd.to_datetime(multi.timestamp, utc=True)
    n_first = int((stamps <= cut).sum())
    a_rows = offline[(offline.asset == "pump-a") & (pd.to_datetime(offline.timestamp, utc=True) <= cut)]
    assert bool(a_rows.alarm.iloc[-1]), "the cut must fall where the alarm is on"

    episodes_topic = kafka_names.output + ".episodes"
    committed_only = delivery == "exactly-once"
    config = {"kafka": {"episodes_topic": episodes_topic}, "processing": {"delivery": delivery}}
    if committed_only:
        config["kafka"]["transaction_timeout_ms"] = 10_000
    kafka_broker.create_topic(kafka_names.input, partitions=2)
    sensors = [c for c in multi.columns if c not in ("timestamp", "asset")]
    messages = list(read_messages(csv, asset_column="asset", sensors=sensors))
    assert len(messages) == len(multi)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=5)
    try:
        first = edge_daemons("edge-1", batch_size=13, config=config).start()
        replay(messages[:n_first], producer, kafka_names.input)
        _committed_through(kafka_broker.bootstrap, kafka_names.input, kafka_names.group, n_first)
        if how == "sigkill":
            first.kill()  # no clean stop, no last checkpoint
            second = edge_daemons("edge-2", batch_size=13, config=config).start()
        else:
            second = edge_daemons("edge-2", batch_size=13, config=config).start()
            assert first.stop() == 0  # leaves the group: its partitions move to edge-2
        replay(messages[n_first:], producer, kafka_names.input)
    finally:
        producer.close()

    records = read_topic(
        kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=90, committed_only=committed_only
    )
    live = {(r.json()["asset"], r.json()["ts"]): r.json() for r in records}
    assert len(live) == len(offline), second.logs()[-3000:]
    wrong = [(row.asset, row.timestamp) for row in offline.itertuples()
             if live[(row.asset, row.timestamp)]["alarm"] != bool(row.alarm)]  # fmt: skip
    assert not wrong, wrong[:10]

    n_closed = int((offline_episodes.end_reason != "open").sum())
    events = read_topic(
        kafka_broker.bootstrap, episodes_topic, len(offline_episodes) + n_closed, timeout=30,
        committed_only=committed_only,
    )  # fmt: skip
    bodies = [r.json() for r in events]
    opened = sorted(b["episode_id"] for b in bodies if b["event"] == "opened")
    closed = sorted(b["episode_id"] for b in bodies if b["event"] == "closed")
    want_ids = sorted(f"{e.asset}@{e.start}" for e in offline_episodes.itertuples())
    assert opened == want_ids  # each once: no second episode after the restart
    assert closed == sorted(f"{e.asset}@{e.start}" for e in eps.itertuples() if e.end_reason != "open")
    spanning_id = f"pump-a@{longest.start}"
    spanning = next(b for b in bodies if b["event"] == "closed" and b["episode_id"] == spanning_id)
    assert (spanning["end"], spanning["windows"], spanning["end_reason"], spanning["peak_time"]) == (
        longest.end, longest.windows, "cleared", longest.peak_time
    )
    assert spanning["peak"] == pytest.approx(longest.peak, rel=1e-5)
    text = second.metrics()
    assert _metric(text, "memae_ts_alarm_states_restored_total", result="exact") >= 1
    assert _metric(text, "memae_ts_alarm_states_unusable_total", reason="unreadable") == 0


def test_the_state_topic_is_compacted_and_read_back_per_partition(kafka_broker, kafka_names):
    """The store against the broker: the topic is created compacted; reading it back keeps the
    latest record per asset of the partitions asked for (of this input topic only), and an
    unusable latest record is counted and leaves the asset empty (an older one is stale)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, ConfigResource
    from memae_ts.connectors.alarm_state import AlarmStateMetrics, KafkaStateStore, encode_record
    from prometheus_client import CollectorRegistry

    client = {"bootstrap.servers": kafka_broker.bootstrap}
    producer = Producer(client)
    topic = kafka_names.output + ".alarm-state"
    store = KafkaStateStore(client, topic, kafka_names.input, lambda t, k, v, h: producer.produce(t, v, k))
    store.ensure_topic()
    store.ensure_topic()  # exists already: fine
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient(client)  # kept referenced while its future runs
    configs = admin.describe_configs([resource])[resource].result(timeout=15)
    assert configs["cleanup.policy"].value == "compact"

    def record(asset: str, partition: int, through: int, input_topic: str = kafka_names.input) -> bytes:
        return encode_record(asset, "default", input_topic, partition, through, {"v": 1}, None, None)

    store.write([("pump-a", record("pump-a", 0, 10)), ("pump-b", record("pump-b", 1, 11)),
                 ("pump-c", record("pump-c", 0, 12)), ("pump-a", record("pump-a", 0, 20)),
                 ("pump-c", b"{not json"), ("pump-d", record("pump-d", 0, 5, "another.in"))])  # fmt: skip
    producer.flush(15)
    metrics = AlarmStateMetrics(CollectorRegistry())
    found = store.read({0}, metrics)
    assert {a: r["through"] for a, r in found.items()} == {"pump-a": 20}
    assert metrics.unusable.labels(reason="unreadable")._value.get() == 1
    assert set(store.read({0, 1}, AlarmStateMetrics(CollectorRegistry()))) == {"pump-a", "pump-b"}
