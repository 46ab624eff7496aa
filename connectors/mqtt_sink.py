"""MQTT sink: score records and dead letters published with QoS 1; ``flush`` returns once the
broker has acknowledged (PUBACK) every one, so the checkpoint after it acknowledges readings
whose scores are safe.

Topics: ``mqtt.score_topic`` with ``{asset}`` replaced (``memae-ts/scores/{asset}``: a
dashboard subscribes to one asset or ``memae-ts/scores/+``); the payload is the score record
of the Kafka output topic, byte for byte. Alarm episode records (``opened``/``closed``, those
of the Kafka episodes topic byte for byte) go to ``mqtt.episodes_topic``
(``memae-ts/episodes/{asset}``; empty: not sent). Dead letters go to
``mqtt.dead_letter_topic`` as a JSON envelope — ``reason`` (the reasons of the Kafka
dead-letter topic), ``detail``, ``source_topic`` and the original payload (``payload`` as text
when it is UTF-8, else ``payload_base64``) — because MQTT 3.1.1 has no headers; under MQTT 5
the same fields are also user properties.

The sink has its own client id (``<client_id>-out``) and persistent session, so QoS 1
publications in flight when the broker goes away are sent again by paho on reconnect, and a
flush waits through a broker restart up to ``processing.flush_timeout_seconds``; past it,
:class:`~connectors.kafka_sink.DeliveryFailed` makes the daemon exit without acknowledging the
readings (the broker redelivers them to the next daemon).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from memae_ts.connectors.kafka_sink import DeliveryFailed
from memae_ts.connectors.mqtt_client import Connection, make_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


class MqttSink:
    def __init__(self, settings: Any, startup_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.client = make_client(settings, f"{settings.client_id}-out")
        self._lock = threading.Lock()
        self._all_acked = threading.Condition(self._lock)  # notified when nothing is unacknowledged
        self._unacked: set[int] = set()
        self._early: set[int] = set()
        self._sent = 0
        self.client.on_publish = self._on_publish
        self.connection = Connection(self.client, settings, "sink")
        self.connection.start(startup_timeout_s)
        self._v5 = settings.protocol == "5"
        if not settings.episodes_topic:
            log.warning("mqtt.episodes_topic is empty: alarm episode records are not sent over MQTT")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
                if not self._unacked:
                    self._all_acked.notify_all()
            else:  # the PUBACK came back before publish() returned
                self._early.add(mid)

    def _publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        # paho calls on_publish holding its own lock, so ours is never held around publish().
        info = self.client.publish(topic, payload, qos=self.settings.qos, properties=properties)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise DeliveryFailed(topic, "paho's outgoing queue is full")
        if self.settings.qos > 0:  # also when not connected: paho sends it on reconnect
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        self._sent += 1

    def publish_many(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        template = self.settings.score_topic
        for key, value in zip(keys, values, strict=True):
            self._publish(template.replace("{asset}", key.decode()), value)

    def publish_episodes(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Alarm episode records (``opened``/``closed``, encoded by the processor exactly as for
        the Kafka episodes topic) to ``mqtt.episodes_topic`` with ``{asset}`` replaced; QoS as
        the scores and acknowledged by the same :meth:`flush`, so before the readings are."""
        template = self.settings.episodes_topic
        if not template:
            return
        for key, value in zip(keys, values, strict=True):
            self._publish(template.replace("{asset}", key.decode()), value)

    def dead_letter(
        self, key: bytes | None, value: bytes | None, reason: str, detail: str, source: tuple[str, int, int]
    ) -> None:
        envelope: dict[str, Any] = {"reason": reason, "detail": detail, "source_topic": source[0]}
        if key:
            envelope["asset"] = key.decode("utf-8", "replace")
        raw = value or b""
        try:
            envelope["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            envelope["payload_base64"] = base64.b64encode(raw).decode()
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("reason", reason), ("detail", detail[:512]), ("source_topic", source[0])]
        self._publish(self.settings.dead_letter_topic, orjson.dumps(envelope), props)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for every PUBACK (paho resends after a reconnect); raise DeliveryFailed past
        ``timeout_s``. Returns how many records were sent since the last flush."""
        deadline = time.monotonic() + timeout_s
        warned = False
        while True:
            with self._lock:
                left = len(self._unacked)
                if left:
                    self._all_acked.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                    left = len(self._unacked)
            if not left:
                break
            if time.monotonic() >= deadline:
                raise DeliveryFailed(
                    self.settings.score_topic, f"{left} records not acknowledged in {timeout_s}s"
                )
            if not warned and time.monotonic() + timeout_s - deadline > 5.0:
                log.warning("waiting for the mqtt broker to acknowledge scores", extra={"queued": left})
                warned = True
        sent, self._sent = self._sent, 0
        return sent

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.flush(timeout_s)
        except DeliveryFailed as exc:
            log.warning("mqtt sink closed with records unacknowledged", extra={"error": str(exc)})
        self.connection.stop()
