"""The Kafka source's rebalance watchdog (connectors/kafka_source.py): a member whose group join
does not complete while the broker answers gets a new consumer, logged and counted.

The real-broker test produces the condition on demand: another member of the group (a
kafka-python consumer, whose heartbeat thread keeps it in the group) joins, takes every
partition and then stops polling. When our source joins, the coordinator waits for that member
to rejoin for up to its rebalance timeout (``max_poll_interval_ms``, 5 minutes here), so our
join stays unfinished although the broker answers every request."""

from __future__ import annotations

import logging
import time

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from memae_ts.connectors.kafka_source import InstanceFenced, KafkaSource, RebalanceWatchdog
from test_edge_kafka import produce


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watchdog_fires_only_after_the_limit_of_reachable_unfinished_joins() -> None:
    clock = FakeClock()
    dog = RebalanceWatchdog(60.0, clock)
    assert dog.observe("wait-join", True) is None  # the clock starts
    clock.now += 59
    assert dog.observe("wait-sync", True) is None
    clock.now += 2
    reason = dog.observe("wait-join", True)
    assert reason is not None and "61 s" in reason and "wait-join" in reason
    # Fired once; the next unfinished join starts a new count.
    clock.now += 1
    assert dog.observe("wait-join", True) is None
    clock.now += 30
    assert dog.observe("wait-join", True) is None
    # A completed join resets it ...
    assert dog.observe("steady", True) is None
    clock.now += 100
    assert dog.observe("wait-join", True) is None
    clock.now += 50
    # ... and so does a coordinator that is not reachable (an outage is not a livelock).
    assert dog.observe("wait-join", False) is None
    clock.now += 50
    assert dog.observe("wait-join", True) is None
    clock.now += 59
    assert dog.observe("wait-join", True) is None
    # librdkafka's statistics: the group's join state and whether the coordinator is up.
    clock.now += 2
    assert dog.observe_statistics({"cgrp": {"state": "up", "join_state": "wait-join"}}) is not None
    assert dog.observe_statistics({"cgrp": {"state": "up", "join_state": "steady"}}) is None
    assert dog.observe_statistics({}) is None  # no group state yet ("init")
    # "init" (no join under way: the topic does not exist yet) never starts the clock ...
    clock.now += 1000
    assert dog.observe("init", True) is None
    clock.now += 1000
    assert dog.observe("init", True) is None and dog.since is None
    # ... but a join that keeps failing and starting again (through "init") is still stuck.
    assert dog.observe("wait-join", True) is None
    clock.now += 30
    assert dog.observe("init", True) is None
    clock.now += 31
    assert dog.observe("wait-join", True) is not None


def test_the_default_limit_is_three_session_timeouts_but_at_least_a_minute(kafka_broker, kafka_names) -> None:
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    client = {"bootstrap_servers": [kafka_broker.bootstrap]}
    for session_ms, limit in ((6_000, 60.0), (30_000, 90.0)):
        source = KafkaSource(client, kafka_names.input, kafka_names.group, session_timeout_ms=session_ms)
        try:
            assert source.watchdog.limit_s == limit
        finally:
            source.close()


def test_a_member_whose_topic_does_not_exist_yet_is_not_replaced(kafka_broker, kafka_names) -> None:
    """librdkafka does not join the group until a subscribed topic exists (join state "init"):
    waiting for the topic is not a stuck join, so the consumer is kept."""
    source = KafkaSource(
        {"bootstrap_servers": [kafka_broker.bootstrap]}, kafka_names.input, kafka_names.group,
        session_timeout_ms=6_000, rebalance_stuck_s=2.0,
    )  # fmt: skip
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            assert len(source.poll(200)) == 0
        assert source.consumers_replaced == 0 and not source.joined()
        assert source.watchdog.state == "init"
    finally:
        source.close()


@pytest.mark.slow
def test_a_join_held_up_by_a_member_that_stopped_polling_gets_a_new_consumer(
    kafka_broker, kafka_names, caplog
) -> None:
    topic, group = kafka_names.input, kafka_names.group
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker.bootstrap, topic, [(f"pump-{i % 3}".encode(), b"{}") for i in range(60)])
    blocker = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=300_000,  # its rebalance timeout: how long the coordinator waits
        partition_assignment_strategy=[CooperativeStickyAssignor],
    )
    source = None
    try:
        deadline = time.monotonic() + 60
        while not blocker.assignment():
            assert time.monotonic() < deadline, "the blocking member never got its partitions"
            blocker.poll(timeout_ms=200)
        # From here on the blocker's heartbeat thread keeps it in the group, but it never polls:
        # it cannot rejoin, so the rebalance our source's join starts cannot complete.
        stuck: list[str] = []
        source = KafkaSource(
            {"bootstrap_servers": [kafka_broker.bootstrap]}, topic, group,
            session_timeout_ms=6_000, rebalance_stuck_s=8.0, on_stuck=stuck.append,
        )  # fmt: skip
        caplog.set_level(logging.ERROR, logger="memae_ts.connectors.kafka_source")
        deadline = time.monotonic() + 45
        while not stuck:
            assert time.monotonic() < deadline, f"watchdog never fired (state {source.watchdog.state!r})"
            assert len(source.poll(200)) == 0  # nothing is read while the join is stuck
        assert source.consumers_replaced == 1 and not source.joined()
        assert "no completed group join" in stuck[0]
        lines = [r for r in caplog.records if r.getMessage().startswith("consumer group join stuck")]
        assert len(lines) == 1 and lines[0].reason == stuck[0]  # type: ignore[attr-defined]

        # The blocker goes away: the new consumer joins, gets both partitions and reads all.
        blocker.close(autocommit=False)
        blocker = None
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 60:
            assert time.monotonic() < deadline, (seen, source.watchdog.state)
            seen += len(source.poll(200))
        assert source.joined() and source.assigned == {0, 1}
        assert source.consumers_replaced == 1  # the completed join stopped the watchdog
    finally:
        if blocker is not None:
            blocker.close(autocommit=False)
        if source is not None:
            source.close()


def test_a_second_member_with_our_group_instance_id_fences_us_with_a_typed_error(
    kafka_broker, kafka_names
) -> None:
    """Static membership: a newer member with the same ``group_instance_id`` takes over and the
    old one gets librdkafka's fatal fencing error, raised as :class:`InstanceFenced` (the daemon
    exits 2: a configuration error, two gateways with one id)."""
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    client = {"bootstrap_servers": [kafka_broker.bootstrap]}
    options = {"session_timeout_ms": 6_000, "group_instance_id": "gateway-1"}
    first = KafkaSource(client, kafka_names.input, kafka_names.group, **options)
    second = None
    try:
        deadline = time.monotonic() + 60
        while not first.joined():
            assert time.monotonic() < deadline
            first.poll(200)
        second = KafkaSource(client, kafka_names.input, kafka_names.group, **options)
        deadline = time.monotonic() + 60
        with pytest.raises(InstanceFenced, match="gateway-1"):
            while time.monotonic() < deadline:
                second.poll(100)
                first.poll(100)
    finally:
        for source in (first, second):
            if source is not None:
                source.close()  # a fenced consumer's close does not raise
