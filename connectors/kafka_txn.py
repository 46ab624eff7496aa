"""Exactly-once mode (``[processing] delivery = "exactly-once"``): the score records, dead letters
and episode records of a checkpoint, the input offsets and the rebuild point are committed in
one Kafka transaction, read back by ``read_committed`` consumers.

The consumer is the at-least-once path's (:class:`~connectors.kafka_source.KafkaSource`, a
librdkafka consumer), reading ``read_committed``: a transaction commits its offsets with
``send_offsets_to_transaction(offsets, group_metadata)``, where the group metadata (group id,
generation, member id; KIP-447) is what fences a member that lost its partitions in a
rebalance, and librdkafka's producer only takes that metadata from a librdkafka consumer.

Checkpoint (the processor's order is unchanged; only what "commit" means differs):

1. every record of the processed readings is produced inside the open transaction;
2. the producer is flushed (all acknowledged: the daemon's usual check);
3. the offsets, each with its rebuild point as commit metadata, are sent to the transaction
   with the consumer's group metadata, and the transaction is committed; the next one begins.

A crash anywhere before 3 leaves the transaction open: the broker aborts it (the restarted
daemon's ``init_transactions`` with the same ``transactional.id`` fences and aborts it at once;
otherwise after ``transaction_timeout_ms``), a ``read_committed`` reader never sees its
records, and the readings are scored again from the committed offsets: no duplicates, no gaps.
A transaction the broker refuses to commit (a rebalance moved a partition, a broker outage past
the timeout) is aborted, every assigned partition's buffers are dropped and rebuilt from the
committed rebuild points, and the readings since are scored again in a new transaction.
A fatal producer error (fenced by a newer instance with the same id) exits the daemon (1).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from memae_ts.connectors.kafka_sink import DeliveryFailed, KafkaSink
from memae_ts.connectors.kafka_source import KafkaSource

log = logging.getLogger(__name__)


class TransactionalSink(KafkaSink):
    """A :class:`KafkaSink` whose records go out in transactions (``transactional.id``): one is
    always open; :meth:`commit_offsets` commits it with the input offsets and begins the next."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        dead_letter_topic: str,
        *,
        transactional_id: str,
        transaction_timeout_ms: int = 60_000,
        **kwargs: Any,
    ) -> None:
        self._transactional = {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": transaction_timeout_ms,
        }
        super().__init__(client_config, topic, dead_letter_topic, **kwargs)
        # Fences an earlier instance with this id and aborts what it left open.
        self.producer.init_transactions(30)
        self.producer.begin_transaction()

    def _producer_settings(self) -> dict[str, Any]:
        settings = {**super()._producer_settings(), **self._transactional}
        # librdkafka: a record must fail within the transaction's lifetime.
        limit = settings["transaction.timeout.ms"]
        settings["delivery.timeout.ms"] = min(settings["delivery.timeout.ms"], limit)
        return settings

    def commit_offsets(self, offsets: list[TopicPartition], group_metadata: Any, timeout_s: float) -> bool:
        """Send ``offsets`` into the open transaction and commit it; begin the next. False: the
        transaction was aborted (its records are discarded; the caller re-reads). Raises
        :class:`DeliveryFailed` on a fatal error (fenced, or the producer's state is lost)."""
        deadline = time.monotonic() + timeout_s
        step = "send_offsets"
        while True:
            try:
                remaining = max(1.0, deadline - time.monotonic())
                if step == "send_offsets":
                    self.producer.send_offsets_to_transaction(offsets, group_metadata, remaining)
                    step = "commit"
                self.producer.commit_transaction(remaining)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise DeliveryFailed(self.topic, error) from None
                if error.txn_requires_abort() or time.monotonic() >= deadline or not error.retriable():
                    log.warning(
                        "transaction aborted; its readings are read and scored again",
                        extra={"error": error.str(), "step": step},
                    )
                    self._abort()
                    return False
                time.sleep(0.1)
        self.producer.begin_transaction()
        return True

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            error = exc.args[0]
            raise DeliveryFailed(self.topic, error) from None
        self._failures.clear()
        self._refused.clear()
        self._sent = 0
        self.producer.begin_transaction()

    def close(self, timeout_s: float = 10.0) -> None:
        """An open transaction with records is aborted (they were never committed with their
        offsets: they will be scored again)."""
        try:
            self.producer.abort_transaction(max(1.0, timeout_s))
        except KafkaException:
            pass  # nothing open, or the producer is already fenced: nothing to undo
        super().close(timeout_s)


class TransactionalSource(KafkaSource):
    """The input topic read ``read_committed``; offsets are committed by the sink's
    transaction, never by the consumer. Everything else (settings, rebuild on assignment,
    rewind, lags, the rebalance watchdog) is :class:`KafkaSource`'s."""

    transactional = True  # a refused commit rewinds (StreamProcessor.checkpoint keeps nothing)
    read_committed = True

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        group_id: str,
        sink: TransactionalSink,
        *,
        commit_timeout_s: float = 30.0,
        **options: Any,
    ) -> None:
        self.sink = sink
        super().__init__(client_config, topic, group_id, commit_timeout_s=commit_timeout_s, **options)

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        """Commit the open transaction with these offsets (and rebuild points). When the
        broker refuses it, everything since the last commit is rebuilt and scored again."""
        offsets = self._commit_offsets(next_offsets, rebuild_from)
        if self.sink.commit_offsets(offsets, self.consumer.consumer_group_metadata(), self.commit_timeout_s):
            return True
        parts = set(self.assigned)
        if self._on_revoked is not None and parts:
            self._on_revoked(parts)  # buffers hold readings whose scores were discarded
        self.rewind(parts)
        return False
