"""Kafka sink: score records and dead letters, with delivery confirmed before any commit.

Why librdkafka (confluent-kafka) here while the source uses kafka-python: the daemon writes one
score record per reading, and kafka-python's producer costs about 25 µs of Python per record,
several times the whole per-reading budget; librdkafka takes about 1 µs and does batching and
I/O on its own threads. The options are the same kafka-python-style keys as the consumer's
(:func:`producer_config` translates them), so one ``[kafka]`` section configures both.

Why ``flush`` raises instead of returning quietly: the daemon commits input offsets only after
``flush`` returns, so a record the broker never acknowledged must stop the commit. The producer
is idempotent with ``acks=all``, so its own retries (e.g. across a broker restart) add no
duplicates; a record that still fails after ``delivery_timeout_ms`` is fatal and the daemon
exits to resume from the last commit. Only failed deliveries are reported back
(``delivery.report.only.error``): a flush that leaves nothing queued and reported no error
means every record was acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

# kafka-python option -> librdkafka property, for the options the edge config can set.
_PROPERTY = {
    "bootstrap_servers": "bootstrap.servers",
    "client_id": "client.id",
    "request_timeout_ms": "request.timeout.ms",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
}


def producer_config(client_config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka properties for kafka-python-style client options; an option with no
    translation is an error rather than silently dropped (it may be a security setting)."""
    out: dict[str, Any] = {}
    for key, value in client_config.items():
        if key == "ssl_check_hostname":
            out["ssl.endpoint.identification.algorithm"] = "https" if value else "none"
        elif key == "bootstrap_servers":
            out["bootstrap.servers"] = value if isinstance(value, str) else ",".join(value)
        elif key in _PROPERTY:
            out[_PROPERTY[key]] = value
        else:
            raise ValueError(f"Kafka option {key!r} has no producer equivalent")
    return out


# A dead letter keeps at most this much of the original value (the producer's limit is 1 MB).
DEAD_LETTER_MAX_VALUE = 512 * 1024


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a produced record; offsets must not be committed."""

    def __init__(self, topic: str, error: object) -> None:
        super().__init__(f"delivery to {topic!r} failed: {error}")
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
        linger_ms: int = 5,
        delivery_timeout_ms: int = 120_000,
    ) -> None:
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self._sent = 0
        self._failures: list[DeliveryFailed] = []
        self.producer = Producer(
            {
                **producer_config(client_config),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": linger_ms,
                "delivery.timeout.ms": delivery_timeout_ms,
                "compression.type": "none",
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
                "logger": log,
            }
        )

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._failures.append(DeliveryFailed(message.topic(), error))

    def _on_error(self, error: KafkaError) -> None:
        # Broker down, connection refused, ...: librdkafka keeps retrying; only a fatal error
        # (e.g. the idempotent producer lost its sequence) means records may be lost.
        if error.fatal():
            self._failures.append(DeliveryFailed(self.topic, error))
        else:
            log.warning("kafka producer error", extra={"error": str(error)})

    def warm_up(self) -> None:
        """Fetch the output topics' metadata now (auto-creating them if the broker allows),
        so the first batch does not stall while the daemon already counts as ready."""
        for topic in (self.topic, self.dead_letter_topic):
            try:
                self.producer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                log.warning("output topic not available yet", extra={"topic": topic, "error": str(exc)})

    def publish_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Score records (already encoded), in order; key = asset id."""
        produce = self.producer.produce
        topic = self.topic
        for key, value in zip(keys, values, strict=True):
            try:
                produce(topic, value, key)  # the common case, without the call to _produce
            except BufferError:
                self._produce(topic, key, value, None)
        self._sent += len(values)
        self.producer.poll(0)

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
        try:
            self._produce(self.dead_letter_topic, key, value, headers)
        except KafkaException as exc:
            if value is None or exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            # Too large with our headers (the input was near the size limit). The original
            # stays in the input topic, where the source_* headers point; keep what fits.
            headers.append(("truncated_from_bytes", str(len(value)).encode()))
            self._produce(self.dead_letter_topic, key, value[:DEAD_LETTER_MAX_VALUE], headers)
        self._sent += 1

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        try:
            self.producer.produce(topic, value, key, headers=headers)
        except BufferError:  # local queue full: let librdkafka send, then retry once
            self.producer.poll(1.0)
            self.producer.produce(topic, value, key, headers=headers)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Block until every record sent so far is acknowledged; returns how many were.

        Keeps waiting through a broker outage (the producer retries) up to ``timeout_s``.
        Raises :class:`DeliveryFailed` when a record failed for good or is still unacked.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self.producer.flush(max(0.1, min(5.0, deadline - time.monotonic())))
            if self._failures:
                failure, self._failures = self._failures[0], []
                raise failure
            if remaining == 0:
                break
            if time.monotonic() >= deadline:
                raise DeliveryFailed(self.topic, f"{remaining} records not acknowledged in {timeout_s}s")
            log.warning("waiting for the broker to acknowledge scores", extra={"queued": remaining})
        sent, self._sent = self._sent, 0
        return sent

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self.producer.flush(timeout_s)
        if remaining:  # closing must not mask the reason we are closing
            log.warning("producer closed with records unacknowledged", extra={"queued": remaining})
