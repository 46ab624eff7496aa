"""Kafka sink: score records and dead letters, with delivery confirmed before any commit.

Why librdkafka (confluent-kafka): the daemon writes one score record per reading, and
kafka-python's producer costs about 25 µs of Python per record, several times the whole
per-reading budget; librdkafka takes about 1 µs and does batching and I/O on its own threads
(the consumer, connectors/kafka_source.py, is librdkafka's too). ``[kafka]`` holds
kafka-python-style keys; :func:`producer_config` translates them for every client.

Why ``flush`` raises instead of returning quietly: the daemon commits input offsets only after
``flush`` returns, so a record the broker never acknowledged must stop the commit. The producer
is idempotent with ``acks=all``, so its own retries (e.g. across a broker restart) add no
duplicates; a record that still fails after ``delivery_timeout_ms`` is fatal and the daemon
exits to resume from the last commit. Only failed deliveries are reported back
(``delivery.report.only.error``): a flush that leaves nothing queued and reported no error
means every record was acknowledged.

The one exception is a dead letter the dead-letter topic refuses for its size (the topic's
``max.message.bytes`` is smaller than the input topic's, or several dead letters batched
together exceed it). Exiting would crash-loop on the same input message and republish the
scores before it at every restart, so the rule is: a dead letter's value is cut to fit the
topic's limit (read at start) with a ``truncated_from_bytes`` header; one the broker still
refuses is sent again alone with the cut value, then with headers only (the ``source_*``
headers point at the original in the input topic); one refused even then is dropped, logged
and counted. Every cut and every drop is counted (``memae_ts_dead_letters_truncated_total``,
``memae_ts_dead_letters_dropped_total``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

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
# Bytes of a one-record batch besides its key, value and headers (61 batch header, record
# framing and varints), with room to spare.
_RECORD_OVERHEAD = 160


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a produced record; offsets must not be committed."""

    def __init__(self, topic: str, error: object) -> None:
        super().__init__(f"delivery to {topic!r} failed: {error}")
        self.topic = topic
        self.error = error


class BrokerAuthFailed(RuntimeError):
    """The broker refused our credentials or the TLS handshake failed (wrong password, CA or
    host name): retrying cannot help until the configuration changes."""


# librdkafka errors that mean the credentials or the TLS setup are wrong, not the network.
_AUTH_ERRORS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED})


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
        on_dead_letter_cut: Callable[[str], None] | None = None,
        episodes_topic: str | None = None,
    ) -> None:
        self.topic = topic
        self.episodes_topic = episodes_topic or None  # alarm episode records (None: not sent)
        self.dead_letter_topic = dead_letter_topic
        self._client = producer_config(client_config)
        self._sent = 0
        self._failures: list[DeliveryFailed] = []
        self._refused: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.auth_error: KafkaError | None = None
        self._logged: dict[str, float] = {}
        self._limit_known = False
        self._on_cut = on_dead_letter_cut or (lambda action: None)
        # Largest dead-letter value sent as it is; set from the topic's max.message.bytes.
        self.dead_letter_limit: int | None = None  # the topic's max.message.bytes, once read
        self._linger_ms, self._delivery_timeout_ms = linger_ms, delivery_timeout_ms
        self.producer = Producer(self._producer_settings())

    def _producer_settings(self) -> dict[str, Any]:
        """librdkafka properties (connectors/kafka_txn.py adds the transactional ones)."""
        return {
            **self._client,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": self._linger_ms,
            "delivery.timeout.ms": self._delivery_timeout_ms,
            "compression.type": "none",
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            "logger": log,
            # librdkafka logs every failed connection attempt; error_cb reports them once.
            "log_level": 2,
        }

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._failures.append(DeliveryFailed(message.topic(), error))

    def _dead_letter_report(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Callable[[KafkaError | None, Any], None]:
        """A delivery callback for one dead letter: it keeps the headers, which delivery
        reports do not carry, so a refused dead letter can be sent again with them."""

        def report(error: KafkaError | None, message: Any) -> None:
            if error is None:
                return
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                self._refused.append((key, value, headers))
            else:
                self._failures.append(DeliveryFailed(message.topic(), error))

        return report

    def _on_error(self, error: KafkaError) -> None:
        # Broker down, connection refused, ...: librdkafka keeps retrying; only a fatal error
        # (e.g. the idempotent producer lost its sequence) means records may be lost.
        if error.fatal():
            self._failures.append(DeliveryFailed(self.topic, error))
        elif error.code() in _AUTH_ERRORS:
            self.auth_error = error
            log.error("kafka authentication or TLS failed", extra={"error": error.str()})
        else:
            # Once per distinct error and minute: an outage must not flood the journal.
            text = error.str()
            now = time.monotonic()
            if now - self._logged.get(text, -math.inf) >= 60:
                self._logged[text] = now
                log.warning("kafka producer error", extra={"error": text})

    def warm_up(self) -> None:
        """Fetch the output topics' metadata now (auto-creating them if the broker allows),
        so the first batch does not stall while the daemon already counts as ready; read the
        dead-letter topic's size limit so dead letters are cut to fit it.

        Raises :class:`BrokerAuthFailed` as soon as the broker refuses the credentials or the
        TLS handshake fails, with the broker's reason (instead of a timeout much later)."""
        topics = [self.topic, self.dead_letter_topic]
        if self.episodes_topic:
            topics.append(self.episodes_topic)
        for topic in topics:
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.producer.list_topics(topic, timeout=1)
                    break
                except KafkaException as exc:
                    self.producer.poll(0)  # error_cb is served from poll
                    if self.auth_error is not None:
                        raise BrokerAuthFailed(self.auth_error.str()) from None
                    if time.monotonic() >= deadline:
                        log.warning(
                            "output topic not available yet", extra={"topic": topic, "error": str(exc)}
                        )
                        break
        self._read_dead_letter_limit()

    def _read_dead_letter_limit(self) -> None:
        limit = self._topic_max_bytes(self.dead_letter_topic)
        self._limit_known = limit is not None
        if limit is not None:
            self.dead_letter_limit = limit

    def _room(self, key: bytes | None, headers: list[tuple[str, bytes]]) -> int:
        """The largest value that fits one dead letter with this key and headers (plus a
        ``truncated_from_bytes`` header) into the dead-letter topic."""
        if self.dead_letter_limit is None:
            return DEAD_LETTER_MAX_VALUE
        fixed = _RECORD_OVERHEAD + len(key or b"") + sum(len(k) + len(v) + 4 for k, v in headers) + 40
        return max(0, min(DEAD_LETTER_MAX_VALUE, self.dead_letter_limit - fixed))

    def _topic_max_bytes(self, topic: str) -> int | None:
        """The topic's ``max.message.bytes``, or None when it cannot be read (no DescribeConfigs
        permission: refused dead letters are then cut when the broker says so)."""
        admin = AdminClient({**self._client, "logger": log, "error_cb": lambda error: None})
        try:
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            configs = admin.describe_configs([resource], request_timeout=10)[resource].result(timeout=15)
            return int(configs["max.message.bytes"].value)
        except Exception as exc:  # any failure here only costs the proactive cut
            log.warning("dead-letter topic size limit unknown", extra={"topic": topic, "error": repr(exc)})
            return None

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

    def publish_episodes(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Alarm episode records (opened/closed, already encoded) to the episodes topic, key =
        asset; acknowledged by the same flush as the score records, so before the commit."""
        if not self.episodes_topic:
            return
        for key, value in zip(keys, values, strict=True):
            self._produce(self.episodes_topic, key, value, None)
        self._sent += len(values)

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
        room = self._room(key, headers)
        if value is not None and len(value) > room:
            self._mark_cut(headers, len(value))
            value = value[:room]
        try:
            self._produce(self.dead_letter_topic, key, value, headers)
        except KafkaException as exc:
            if value is None or exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            # Too large with our headers (the input was near the producer's limit). The
            # original stays in the input topic, where the source_* headers point.
            self._mark_cut(headers, len(value))
            self._produce(self.dead_letter_topic, key, value[:DEAD_LETTER_MAX_VALUE], headers)
        self._sent += 1

    def _mark_cut(self, headers: list[tuple[str, bytes]], size: int) -> None:
        """Record (once per dead letter) that its value was cut from ``size`` bytes."""
        if not any(name == "truncated_from_bytes" for name, _ in headers):
            headers.append(("truncated_from_bytes", str(size).encode()))
            self._on_cut("truncated")

    def _resend_refused(self, timeout_s: float) -> None:
        """Dead letters the broker refused for their size, one at a time (batched together
        they may be what was too large): with a shorter value, then headers only, then
        dropped (see the module docstring)."""
        refused, self._refused = self._refused, []
        if not self._limit_known:  # e.g. the topic did not exist yet at start
            self._read_dead_letter_limit()
        for key, value, headers in refused:
            size = len(value or b"")
            room = self._room(key, headers)
            attempts = [value if size <= room else (value or b"")[:room]]  # alone, it may fit as it is
            if self.dead_letter_limit is None and size:
                attempts.append((value or b"")[: size // 4])
            attempts.append(b"")
            for attempt in attempts:
                if len(attempt or b"") < size:
                    self._mark_cut(headers, size)
                self._produce(self.dead_letter_topic, key, attempt, headers)
                self.producer.flush(timeout_s)
                if not self._refused:
                    break
                self._refused.clear()
            else:
                self._on_cut("dropped")
                where = {k: v.decode("utf-8", "replace") for k, v in headers}
                log.error(
                    "dead letter refused by the dead-letter topic even without its value; dropped",
                    extra={"topic": self.dead_letter_topic, "headers": where},
                )

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        extra: dict[str, Any] = {}
        if headers is not None:  # a dead letter
            extra = {"headers": headers, "on_delivery": self._dead_letter_report(key, value, headers)}
        try:
            self.producer.produce(topic, value, key, **extra)
        except BufferError:  # local queue full: let librdkafka send, then retry once
            self.producer.poll(1.0)
            self.producer.produce(topic, value, key, **extra)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Block until every record sent so far is acknowledged; returns how many were.

        Keeps waiting through a broker outage (the producer retries) up to ``timeout_s``.
        Raises :class:`DeliveryFailed` when a record failed for good or is still unacked.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self.producer.flush(max(0.1, min(5.0, deadline - time.monotonic())))
            if self._refused:
                self._resend_refused(max(1.0, deadline - time.monotonic()))
                continue
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
