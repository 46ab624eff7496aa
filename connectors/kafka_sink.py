"""Kafka sink: score records and dead letters, with delivery confirmed before any commit.

Why ``flush`` raises instead of returning quietly: the daemon commits input offsets only after
``flush`` returns, so a record the broker never acknowledged must stop the commit. The producer
is idempotent with ``acks=all``, so its own retries (e.g. across a broker restart) add no
duplicates; a record that still fails after ``delivery_timeout_ms`` is fatal and the daemon
exits to resume from the last commit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from connectors.messages import ScoreRecord

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a produced record; offsets must not be committed."""

    def __init__(self, topic: str, error: BaseException) -> None:
        super().__init__(f"delivery to {topic!r} failed: {error!r}")
        self.topic = topic
        self.error = error


class KafkaSink:
    """Produces score records to ``topic`` and invalid inputs to ``dead_letter_topic``."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        dead_letter_topic: str,
        *,
        linger_ms: int = 50,
        batch_size: int = 1 << 20,
        delivery_timeout_ms: int = 120_000,
    ) -> None:
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self._pending: list[tuple[str, FutureRecordMetadata]] = []
        self.producer = KafkaProducer(
            **client_config,
            acks="all",
            enable_idempotence=True,
            # The processor flushes after every poll, so linger only saves wake-ups of the
            # sender thread (one per new batch), which cost more than the records themselves.
            linger_ms=linger_ms,
            batch_size=batch_size,
            delivery_timeout_ms=delivery_timeout_ms,
            compression_type=None,
        )

    def warm_up(self) -> None:
        """Fetch the output topics' metadata now (auto-creating them if the broker allows),
        so the first batch does not stall while the daemon already counts as ready."""
        for topic in (self.topic, self.dead_letter_topic):
            try:
                self.producer.partitions_for(topic)
            except KafkaError as exc:
                log.warning("output topic not available yet", extra={"topic": topic, "error": repr(exc)})

    def publish(self, record: ScoreRecord) -> None:
        self._send(self.topic, record.asset.encode(), record.to_json(), None)

    def dead_letter(
        self,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        source: tuple[str, int, int],
    ) -> None:
        """The original key and value unchanged, the why and where in headers."""
        topic, partition, offset = source
        headers = [
            ("reason", reason.encode()),
            ("detail", detail.encode("utf-8", "replace")[:512]),
            ("source_topic", topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ]
        self._send(self.dead_letter_topic, key, value, headers)

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        future = self.producer.send(topic, key=key, value=value, headers=headers)
        self._pending.append((topic, future))

    def flush(self, timeout_s: float = 60.0) -> int:
        """Block until every record sent so far is acknowledged; returns how many were.

        Keeps waiting through a broker outage (the producer retries) up to ``timeout_s``.
        Raises :class:`DeliveryFailed` when a record failed for good or is still unacked.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.producer.flush(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
                break
            except KafkaTimeoutError:
                if time.monotonic() >= deadline:
                    break
                log.warning("waiting for the broker to acknowledge scores")
        pending, self._pending = self._pending, []
        for topic, future in pending:
            if not future.is_done:
                raise DeliveryFailed(topic, KafkaTimeoutError(f"not acknowledged in {timeout_s}s"))
            if future.failed():
                raise DeliveryFailed(topic, future.exception)
        return len(pending)

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError as exc:  # closing must not mask the reason we are closing
            log.warning("producer close failed", extra={"error": repr(exc)})
