"""The Kafka sink against the real broker: what ``flush`` returns is what the broker holds, and a
record the broker cannot take stops the commit (``DeliveryFailed``) instead of passing quietly."""

from __future__ import annotations

import pytest
from edge_process import read_topic
from memae_ts.connectors.kafka_sink import DeliveryFailed, KafkaSink

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def make_sink(broker, names) -> KafkaSink:  # type: ignore[no-untyped-def]
    return KafkaSink({"bootstrap_servers": [broker.bootstrap]}, names.output, names.dead_letter)


def test_flush_returns_once_the_broker_holds_every_record(kafka_broker, kafka_names):
    kafka_broker.create_topic(kafka_names.output, partitions=2)
    sink = make_sink(kafka_broker, kafka_names)
    try:
        keys = [f"pump-{i % 3}".encode() for i in range(500)]
        values = [b'{"n":%d}' % i for i in range(500)]
        sink.publish_many(keys, values)
        sink.dead_letter(b"pump-9", b"{not json", "bad_json", "line 1", ("in", 0, 42))
        assert sink.flush(timeout_s=30) == 501
        assert sink.flush(timeout_s=30) == 0  # nothing new since
    finally:
        sink.close()
    scores = read_topic(kafka_broker.bootstrap, kafka_names.output, 500, timeout=30)
    assert sorted((r.key, r.value) for r in scores) == sorted(zip(keys, values, strict=True))
    for key in set(keys):  # one asset, one partition, in order
        mine = [r for r in scores if r.key == key]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in sorted(mine, key=lambda r: r.offset)] == [
            v for k, v in zip(keys, values, strict=True) if k == key
        ]
    (dead,) = read_topic(kafka_broker.bootstrap, kafka_names.dead_letter, 1, timeout=30)
    assert (dead.key, dead.value) == (b"pump-9", b"{not json")
    assert dead.headers["reason"] == b"bad_json" and dead.headers["source_offset"] == b"42"


def test_flush_raises_when_the_broker_cannot_acknowledge(kafka_broker, kafka_names):
    kafka_broker.create_topic(kafka_names.output, partitions=1)
    sink = make_sink(kafka_broker, kafka_names)
    sink.warm_up()
    kafka_broker.stop()
    try:
        sink.publish_many([b"pump-1"], [b'{"n":1}'])
        with pytest.raises(DeliveryFailed, match="not acknowledged"):
            sink.flush(timeout_s=3)
        sink.close(timeout_s=0.5)
    finally:
        kafka_broker.start()


def test_a_dead_letter_too_large_for_the_producer_is_cut_not_fatal(kafka_broker, kafka_names):
    kafka_broker.create_topic(kafka_names.dead_letter, partitions=1)
    sink = make_sink(kafka_broker, kafka_names)
    huge = b"[" + b"1," * 499_990 + b"1]"  # just under 1 MB: fits the input topic, not with headers
    try:
        sink.dead_letter(b"pump-1", huge, "wrong_length", "x" * 400, ("in", 3, 7))
        assert sink.flush(timeout_s=30) == 1
    finally:
        sink.close()
    (dead,) = read_topic(kafka_broker.bootstrap, kafka_names.dead_letter, 1, timeout=30)
    assert dead.value == huge[: len(dead.value)] and 0 < len(dead.value) < len(huge)
    assert dead.headers["truncated_from_bytes"] == str(len(huge)).encode()
    assert dead.headers["source_partition"] == b"3" and dead.headers["source_offset"] == b"7"


def test_a_dead_letter_the_topic_refuses_is_sent_again_cut_then_headers_only_then_dropped(
    kafka_broker, kafka_names
):
    """Issue #14: a dead letter over the dead-letter topic's max.message.bytes failed the
    flush, so the daemon exited without committing, and at every restart re-scored (and
    republished) the same readings and exited again. Now the refusal is handled by the rule
    in the sink's docstring, and the scores of the same flush are acknowledged as usual."""
    kafka_broker.create_topic(kafka_names.output, partitions=1)
    kafka_broker.create_topic(kafka_names.dead_letter, partitions=1, configs={"max.message.bytes": "1500"})
    actions: list[str] = []
    sink = KafkaSink(
        {"bootstrap_servers": [kafka_broker.bootstrap]}, kafka_names.output, kafka_names.dead_letter,
        on_dead_letter_cut=actions.append,
    )  # fmt: skip
    # No warm_up: the topic's limit is unknown, so the broker's refusal is what tells us.
    big = b"{" + b"x" * 4000
    try:
        sink.publish_many([b"pump-1"], [b'{"n":1}'])
        sink.dead_letter(b"pump-1", big, "bad_json", "line 1", ("in", 0, 11))
        sink.dead_letter(b"pump-1", b"{small", "bad_json", "line 1", ("in", 0, 12))
        assert sink.flush(timeout_s=30) == 3
    finally:
        sink.close()
    assert actions == ["truncated"]
    cut, small = read_topic(kafka_broker.bootstrap, kafka_names.dead_letter, 2, timeout=30)
    assert big.startswith(cut.value) and 0 < len(cut.value) < 1500
    assert cut.headers["truncated_from_bytes"] == b"4001" and cut.headers["source_offset"] == b"11"
    assert small.value == b"{small" and "truncated_from_bytes" not in small.headers
    assert len(read_topic(kafka_broker.bootstrap, kafka_names.output, 1, timeout=30)) == 1


def test_a_dead_letter_refused_even_without_its_value_is_dropped_and_counted(kafka_broker, kafka_names):
    kafka_broker.create_topic(kafka_names.dead_letter, partitions=1, configs={"max.message.bytes": "200"})
    actions: list[str] = []
    sink = KafkaSink(
        {"bootstrap_servers": [kafka_broker.bootstrap]}, kafka_names.output, kafka_names.dead_letter,
        on_dead_letter_cut=actions.append,
    )  # fmt: skip
    try:
        sink.warm_up()
        sink.dead_letter(b"pump-1", b"{" * 300, "bad_json", "d" * 400, ("in", 0, 5))
        assert sink.flush(timeout_s=30) == 1  # no DeliveryFailed: the daemon goes on
    finally:
        sink.close()
    assert actions == ["truncated", "dropped"]
    assert read_topic(kafka_broker.bootstrap, kafka_names.dead_letter, 1, timeout=3) == []
