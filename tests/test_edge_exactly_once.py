"""Exactly-once mode ([processing] delivery = "exactly-once", connectors/kafka_txn.py) against
the real broker: the chaos of tests/test_edge_chaos.py (SIGKILLs while scoring, the broker
killed, a member joining and leaving) leaves every offline score in the output topic exactly
once for a ``read_committed`` reader: 0 duplicates, 0 missing, 0 mismatched."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from edge_process import read_topic
from kafka import KafkaConsumer, TopicPartition
from test_edge_chaos import ASSETS, chaos_csv
from test_edge_kafka import assert_matches_offline, join_replay, metric, offline_scores

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(480)]

EXACTLY_ONCE = {"processing": {"delivery": "exactly-once"}, "kafka": {"transaction_timeout_ms": 10_000}}


def committed_records(bootstrap: str, topic: str, n: int, timeout: float) -> list:  # type: ignore[type-arg]
    """What a read_committed reader sees once it has ``n`` records (or at the timeout), and a
    little after that, so late duplicates would show."""
    deadline = time.monotonic() + timeout
    records: list = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        records = read_topic(bootstrap, topic, n, timeout=min(15, max(0.5, deadline - time.monotonic())),
                             committed_only=True)  # fmt: skip
        if len(records) >= n:
            break
    time.sleep(2)
    return read_topic(bootstrap, topic, n, timeout=5, committed_only=True)


class OpenTransaction:
    """Records of the output topic in a transaction not committed yet: the high watermark (what
    a read_uncommitted reader gets to) minus the last stable offset (read_committed)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.uncommitted = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted")
        self.committed = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        self.tps = [TopicPartition(topic, p) for p in sorted(self.uncommitted.partitions_for_topic(topic))]

    def records_open(self) -> int:
        high = self.uncommitted.end_offsets(self.tps)
        stable = self.committed.end_offsets(self.tps)
        return sum(high[tp] - stable[tp] for tp in self.tps)

    def close(self) -> None:
        self.uncommitted.close()
        self.committed.close()


def test_sigkill_mid_transaction_leaves_no_duplicate_and_no_gap(
    kafka_broker, kafka_names, edge_data, edge_daemons, replays
):
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    config = {**EXACTLY_ONCE, "kafka": {**EXACTLY_ONCE["kafka"], "transactional_id": "eo-test-a"}}
    first = edge_daemons("edge-1", batch_size=20, config=config).start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, edge_data.csv, rate=300)
    deadline = time.monotonic() + 60
    bootstrap, output = kafka_broker.bootstrap, kafka_names.output
    while len(read_topic(bootstrap, output, 150, timeout=2, committed_only=True)) < 150:
        assert time.monotonic() < deadline, first.logs()[-3000:]
    # Kill it with a transaction open that holds score records: frozen (SIGSTOP) while the
    # output's end (high watermark) is beyond its last stable offset, checked again a second
    # later, still frozen.
    open_ends = OpenTransaction(bootstrap, output)
    try:
        while True:
            assert time.monotonic() < deadline + 60, "never caught a transaction open"
            if open_ends.records_open() > 0:
                first.send(signal.SIGSTOP)
                # A commit already sent completes on the broker while the daemon is frozen.
                time.sleep(1.0)
                if open_ends.records_open() > 0:
                    break
                first.send(signal.SIGCONT)
            time.sleep(0.002)
        first.kill()
    finally:
        open_ends.close()
    # The same transactional id: the restart aborts what the killed process left open.
    second = edge_daemons("edge-2", batch_size=20, config=config).start()
    join_replay(producer)
    records = committed_records(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=120)
    assert_matches_offline(records, offline)
    assert len(records) == len(offline), second.logs()[-3000:]  # 0 duplicates
    # Score records were in the transaction at the kill: an uncommitted reader sees them twice.
    everything = read_topic(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=5)
    assert len(everything) > len(offline)
    print(f"exactly-once: {len(offline)} scores, {len(everything) - len(offline)} aborted copies hidden")


def test_chaos_exactly_once_zero_duplicates_zero_missing(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path, record_property, replays
):
    rng = np.random.default_rng(14)
    csv, offline = chaos_csv(edge_data, tmp_path, rng)
    kafka_broker.create_topic(kafka_names.input, partitions=3)
    restarts = iter(range(100))

    def daemon(name: str):  # type: ignore[no-untyped-def]
        # Each restart is a new client (as in the at-least-once chaos test); its transactional
        # id is the daemon's name, so a restart fences and aborts the killed one's transaction.
        config = {**EXACTLY_ONCE, "kafka": {**EXACTLY_ONCE["kafka"], "transactional_id": f"eo-{name}"}}
        return edge_daemons(f"{name}-{next(restarts)}", batch_size=20, config=config)

    def scored() -> int:
        return len(read_topic(kafka_broker.bootstrap, kafka_names.output, 10**9, timeout=0.5))

    def kill_while_scoring(victim):  # type: ignore[no-untyped-def]
        before = scored()
        deadline = time.monotonic() + 20
        while scored() <= before and time.monotonic() < deadline:
            time.sleep(float(rng.uniform(0.1, 0.4)))
        victim.kill()

    a = daemon("edge-a").start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, csv, rate=150)
    plan: list[str] = []
    try:
        time.sleep(float(rng.uniform(1.5, 3.0)))
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        b = daemon("edge-b").start()  # a member joins
        plan.append("b joins")
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        time.sleep(float(rng.uniform(0.5, 1.5)))
        kafka_broker.kill()  # the broker dies mid-stream, and comes back
        kafka_broker.start()
        plan.append("kill broker")
        a.wait_ready(60)
        b.wait_ready(60)
        assert b.stop() == 0  # a member leaves
        plan.append("b leaves")
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        join_replay(producer)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.communicate()

    expected = len(offline)
    records = committed_records(kafka_broker.bootstrap, kafka_names.output, expected, timeout=180)
    for asset in ASSETS:  # 0 missing, 0 mismatched
        assert_matches_offline(records, offline[offline.asset == asset], asset=asset)
    duplicates = len(records) - expected
    everything = read_topic(kafka_broker.bootstrap, kafka_names.output, expected, timeout=5)
    record_property("chaos_plan", ", ".join(plan))
    record_property("chaos_duplicates", duplicates)
    print(f"chaos exactly-once: {expected} expected, {len(records)} committed, {duplicates} duplicates, "
          f"{len(everything) - len(records)} aborted records hidden from read_committed")  # fmt: skip
    assert duplicates == 0, a.logs()[-3000:]
    assert a.proc is not None and a.proc.poll() is None, a.logs()[-3000:]


def test_a_broker_outage_past_the_transaction_timeout_is_waited_out(
    kafka_broker, kafka_names, edge_data, edge_daemons, replays
):
    """The broker gone for longer than ``transaction_timeout_ms`` (librdkafka caps the delivery
    timeout there), with score records of an open transaction unacknowledged: the daemon aborts
    it (if the broker, back, has fenced the producer that held it, a new one takes over), waits
    for the broker and scores those readings again; it does not exit (the contract is exit 1
    only after ``flush_timeout_seconds``, as in at-least-once mode). CI saw the daemon exit
    here; this test fails the same way without the fix.

    The broker is frozen (SIGSTOP), not killed: a killed single-node broker that restarts can
    leave a transaction it was committing in PREPARE_COMMIT for good (its log: "No longer the
    coordinator ... skip writing to transaction log"), and the group's committed offsets are
    then unreadable until the broker restarts again; no client can change that. The chaos test
    above kills it."""
    offline = offline_scores(edge_data)
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    config = {**EXACTLY_ONCE, "kafka": {**EXACTLY_ONCE["kafka"], "transactional_id": "eo-outage"}}
    daemon = edge_daemons("edge-outage", batch_size=20, config=config).start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, edge_data.csv, rate=60)
    bootstrap, output = kafka_broker.bootstrap, kafka_names.output
    deadline = time.monotonic() + 60
    while len(read_topic(bootstrap, output, 60, timeout=2, committed_only=True)) < 60:
        assert time.monotonic() < deadline, daemon.logs()[-3000:]
    # Score records the frozen broker cannot acknowledge: readings pile up in the broker while
    # the daemon is stopped (the answer to its pending fetch waits in its socket); the broker
    # freezes; the daemon goes on, scores them and sends the records into its transaction.
    daemon.send(signal.SIGSTOP)
    time.sleep(1.0)
    kafka_broker.freeze()
    try:
        daemon.send(signal.SIGCONT)
        time.sleep(EXACTLY_ONCE["kafka"]["transaction_timeout_ms"] / 1000 + 6)
    finally:
        kafka_broker.thaw()  # the broker serves the later tests
    join_replay(producer)
    records = committed_records(bootstrap, output, len(offline), timeout=120)
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()[-3000:]
    assert_matches_offline(records, offline)
    assert len(records) == len(offline), daemon.logs()[-3000:]  # 0 duplicates
    reasons = ("records_unacknowledged", "commit_refused", "commit_unanswered")
    aborted = sum(metric(daemon, "memae_ts_transactions_aborted_total", reason=reason) for reason in reasons)
    assert aborted >= 1, daemon.logs()[-3000:]
    # Counted when committed: the aborted transaction's scores are not "published".
    assert metric(daemon, "memae_ts_scores_published_total") == len(offline)


def test_records_unacknowledged_past_the_transaction_timeout_abort_it_and_a_new_producer_goes_on(
    kafka_broker, kafka_names
):
    """The sink alone, the path CI's daemon died on: score records produced, then the broker
    gone for longer than the transaction timeout. The flush reports the timed-out records
    without raising, the commit aborts (the broker fenced this producer for the timed-out
    transaction, so a new one takes over) and says so; the next transaction commits, and a
    ``read_committed`` reader sees only its records."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as Offset
    from memae_ts.connectors.kafka_txn import TransactionalSink

    kafka_broker.create_topic(kafka_names.input, partitions=1)
    kafka_broker.create_topic(kafka_names.output, partitions=1)
    client = {"bootstrap_servers": kafka_broker.bootstrap}
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": kafka_names.group})
    aborts: list[str] = []
    sink = TransactionalSink(
        client, kafka_names.output, kafka_names.dead_letter, transactional_id="eo-sink-outage",
        transaction_timeout_ms=5_000, on_abort=aborts.append,
    )  # fmt: skip
    try:
        metadata = consumer.consumer_group_metadata()
        sink.publish_many([b"a"] * 3, [b"lost-1", b"lost-2", b"lost-3"])
        kafka_broker.kill()
        restart = threading.Timer(8.0, kafka_broker.start)  # past the 5 s timeout
        restart.start()
        try:
            assert sink.flush(60) == 0  # timed out after 5 s: no exception, nothing acknowledged
            assert not sink.commit_offsets([Offset(kafka_names.input, 0, 3)], metadata, 30)
        finally:
            restart.join()
        assert aborts == ["records_unacknowledged"]
        sink.publish_many([b"a"] * 2, [b"kept-1", b"kept-2"])
        assert sink.flush(30) == 2
        assert sink.commit_offsets([Offset(kafka_names.input, 0, 3)], metadata, 30)
    finally:
        sink.close(5)
        consumer.close()
    values = [r.value for r in read_topic(kafka_broker.bootstrap, kafka_names.output, 2, committed_only=True)]
    assert values == [b"kept-1", b"kept-2"]
