"""What the Kafka source hands the processor from one poll: librdkafka's messages read as
columns (no Python object per message), the consumer's non-fatal error events left out.

librdkafka cannot be made to put an error event between records on demand, so the consumer
here is a stand-in returning real ``confluent_kafka.Message`` objects; the source's poll and
the processor's use of it run against the real broker in tests/test_edge_kafka.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message
from memae_ts.connectors.kafka_source import KafkaSource
from memae_ts.connectors.processor import _columns, _timestamps


class _Consumer:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def consume(self, n: int, timeout: float) -> list[Any]:
        out, self.messages = self.messages[:n], self.messages[n:]
        return out

    def poll(self, timeout: float) -> Any:
        return None


def _source(messages: list[Any]) -> KafkaSource:
    source = KafkaSource.__new__(KafkaSource)  # no broker: only poll() is exercised
    source._stuck = None
    source.consumer = _Consumer(messages)  # type: ignore[assignment]
    source.batch_size = 100
    source.linger_s = 0.0
    source.group_instance_id = None
    return source


def _message(i: int, **fields: Any) -> Any:
    return Message(
        topic="in", partition=i % 3, offset=100 + i, key=b"pump-%d" % (i % 2), value=b"[%d,1.5]" % i,
        timestamp=(1, 1_700_000_000_000 + i), **fields,
    )  # fmt: skip


def test_a_poll_is_read_as_columns_equal_to_the_records() -> None:
    messages = [_message(i) for i in range(7)]
    polled = _source(messages).poll(0)
    partitions, offsets, keys, values = _columns(polled)
    assert partitions.tolist() == [m.partition() for m in messages]
    assert offsets.tolist() == [m.offset() for m in messages]
    assert keys == [m.key() for m in messages] and values == [m.value() for m in messages]
    assert (_timestamps(polled, [6, 0, 3]) - 1_700_000_000_000).tolist() == [6, 0, 3]
    record = polled[4]  # a dead letter's source fields
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        "in", 1, 104, b"pump-0", b"[4,1.5]"
    )
    # The same as a source of plain records gives (MQTT, OPC UA, the tests' fakes).
    plain = [polled[i] for i in range(len(polled))]
    for got, want in zip(_columns(polled), _columns(plain), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert np.array_equal(_timestamps(polled, [1, 2]), _timestamps(plain, [1, 2]))


def test_error_events_between_records_are_left_out_not_compared() -> None:
    """A non-fatal error event among the messages (end of a partition, a topic not there yet):
    the records around it are kept in order. KafkaError == None sets a TypeError it does not
    raise, so a check by equality failed the next call with a SystemError."""
    messages = [_message(0), _message(1, error=KafkaError(KafkaError._PARTITION_EOF)), _message(2)]
    polled = _source(messages).poll(0)
    assert len(polled) == 2
    assert _columns(polled)[1].tolist() == [100, 102]
    assert [0].count(None) == 0  # no exception left set
