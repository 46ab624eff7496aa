"""A poll short of a full batch waits at most ``linger_ms`` for more readings (real broker).

Why it matters: every poll of the daemon ends in a flush and an offset commit, so at moderate
rates polls of one to five readings cost more CPU than the scoring. `[kafka] linger_ms` (default
0) trades latency for CPU: at 2,000 readings/s, 20 ms cut the daemon's CPU per reading from 297
to 165 us and raised p50 from 26 to 52 ms (bench/stream.py --linger-ms 0,20).
"""

from __future__ import annotations

import threading
import time

import pytest
from memae_ts.connectors.kafka_source import KafkaSource
from test_edge_kafka import produce

pytestmark = pytest.mark.kafka


def _joined_source(bootstrap: str, topic: str, group: str, **options: object) -> KafkaSource:
    source = KafkaSource({"bootstrap_servers": [bootstrap]}, topic, group, **options)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while not source.assigned:
        assert time.monotonic() < deadline, "no partition assigned in 60 s"
        assert len(source.poll(100)) == 0
    return source


def _poll_until_some(source: KafkaSource) -> tuple[int, float]:
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        records = source.poll(200)
        if records:
            return len(records), time.monotonic() - started
        assert time.monotonic() < deadline, "nothing consumed in 30 s"


@pytest.mark.parametrize(("linger_ms", "one_poll"), [(4000, 2), (0, 1)])
def test_a_short_poll_waits_for_the_linger_and_no_longer(
    kafka_broker, kafka_names, linger_ms, one_poll
) -> None:
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    source = _joined_source(kafka_broker.bootstrap, kafka_names.input, kafka_names.group, linger_ms=linger_ms)
    try:
        produce(kafka_broker.bootstrap, kafka_names.input, [(b"pump-1", b"{}")])
        late = threading.Timer(
            1.0, produce, (kafka_broker.bootstrap, kafka_names.input, [(b"pump-1", b"{}")])
        )
        late.start()
        got, _ = _poll_until_some(source)
        late.join()
        # With the linger the second reading, 1 s behind the first, is in the same poll.
        assert got == one_poll
    finally:
        source.close()


def test_a_full_batch_is_not_held_back_by_the_linger(kafka_broker, kafka_names) -> None:
    kafka_broker.create_topic(kafka_names.input, partitions=1)
    source = _joined_source(
        kafka_broker.bootstrap, kafka_names.input, kafka_names.group, linger_ms=1000, batch_size=5
    )
    try:
        produce(kafka_broker.bootstrap, kafka_names.input, [(b"pump-1", b"{}")] * 12)
        time.sleep(0.5)  # all 12 fetched and queued in the client
        got, waited = _poll_until_some(source)
        assert got == 5
        got, waited = _poll_until_some(source)
        assert got == 5 and waited < 0.5  # a full batch queued: no linger
    finally:
        source.close()
