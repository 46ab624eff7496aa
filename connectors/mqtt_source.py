"""MQTT source: readings from a plant broker (Mosquitto, HiveMQ, ...), QoS 1, acknowledged only
after their scores are out.

Two payload forms (``mqtt.payload``):

* ``reading`` — the Kafka message contract unchanged (``connectors/messages.py``): a JSON
  object ``{"ts": ..., "values": {...}}`` or the compact array ``[ts, v0, v1, ...]``, one
  message per row of one asset. The asset is a topic level (``asset_from = "topic"``,
  ``asset_level`` counts levels from 0: in ``plant/line1/pump-7/telemetry`` level 2 is
  ``pump-7``) or the message's ``asset`` field (``asset_from = "message"``).
* ``tag`` — one topic per tag (``plant/line1/pump-7/Pressure``, the sensor at
  ``sensor_level``), payload ``{"ts": ..., "value": 1.02}`` (``value`` null = missing). Tags
  of one asset with the same ``ts`` are merged into one reading. A reading is complete when
  every sensor of the model has a value; it is then scored at once. One that stays incomplete
  is closed ``tag_wait_seconds`` (wall clock) after its first tag arrived, or as soon as a
  reading of a later ``ts`` of the same asset is complete (readings must go forward in time):
  the sensors that never arrived are **missing values** (filled as offline scoring fills
  them, within the model's fill limit) and counted per sensor in
  ``memae_ts_source_tags_missing_total``. A tag arriving after its reading was closed is a dead
  letter (``time_backwards``), counted in ``memae_ts_source_late_values_total``. Tags of
  sensors the model does not use are acknowledged with the reading and otherwise ignored.

Delivery (docs/edge.md, "Delivery guarantee"): messages are subscribed with QoS 1 on a
persistent session and acknowledged (paho ``manual_ack``) only at the checkpoint, after the
sink has every score acknowledged and the journal is on disk. A crash before the PUBACK makes
the broker deliver the message again (``DUP``, counted in
``memae_ts_source_redeliveries_total``): at-least-once, duplicates possible, no gaps — as long
as the broker keeps the session (persistence on, session expiry longer than the outage).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from memae_ts.connectors.messages import InvalidMessage, encode_reading_object, parse_timestamp
from memae_ts.connectors.mqtt_client import Connection, make_client
from memae_ts.connectors.sources import LocalSource, SourceMetrics
from memae_ts.connectors.ticks import PendingReading, TickBuffer
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)


def topic_level(topic: str, level: int) -> str | None:
    parts = topic.split("/")
    return parts[level] if 0 <= level < len(parts) and parts[level] else None


class TagMerger(TickBuffer):
    """Merges one-tag-per-topic messages into readings per (asset, ts); see the module docstring.

    ``emit(asset, ts, values, tokens)`` receives each closed reading in time order per asset;
    ``late(topic, payload, token, detail)`` each tag that came after its reading.
    """

    def __init__(
        self,
        sensors: list[str] | Callable[[str], list[str]],
        wait_seconds: float,
        metrics: SourceMetrics,
        emit: Any,
        late: Any,
    ):
        # The sensors a reading of an asset needs to be complete: one list, or per asset (the
        # model serving it, when several models share the daemon).
        super().__init__(
            sensors if callable(sensors) else (lambda _asset, fixed=list(sensors): fixed),
            wait_seconds,
            metrics,
        )
        self._emit = emit
        self._late = late

    def add(
        self, asset: str, sensor: str, ts: float, value: float | None, token: Any, topic: str, raw: bytes
    ) -> None:
        if not self.put(asset, sensor, ts, value, token):
            self._late(topic, raw, token, f"tag {sensor!r} of {asset!r} at ts {ts} came after its reading")

    def _close(self, asset: str, ts: float, reading: PendingReading) -> None:
        missing = [s for s in self.sensors_of(asset) if s not in reading.values]
        for s in missing:
            self.metrics.tags_missing.labels(source=self.metrics.kind, sensor=s).inc()
        # Every tag that came (extra ones are ignored by the parser), missing ones as null.
        self._emit(asset, ts, {**reading.values, **dict.fromkeys(missing)}, reading.tokens)


class MqttSource(LocalSource):
    """Subscribes to ``settings.topics``; see the module docstring."""

    kind = "mqtt"

    def __init__(
        self,
        settings: Any,
        sensors: list[str] | Callable[[str], list[str]],
        metrics: SourceMetrics,
        *,
        startup_timeout_s: float = 60.0,
        **journal: Any,
    ) -> None:
        super().__init__(metrics, **journal)  # batch_size, state_dir, max_journal (LocalSource)
        self.settings = settings
        metrics.pre_create(list(sensors("") if callable(sensors) else sensors))  # series start at 0
        self.client = make_client(settings, settings.client_id, manual_ack=True)
        self.client.on_message = self._on_message
        self.merger: TagMerger | None = None
        self._stop = threading.Event()
        self._expiry: threading.Thread | None = None
        if settings.payload == "tag":
            self.merger = TagMerger(
                sensors, settings.tag_wait_seconds, metrics, self._emit_merged, self._late_tag
            )
            self._expiry = threading.Thread(target=self._expire_loop, name="mqtt-tags", daemon=True)
        self.connection = Connection(
            self.client, settings, "source", on_connected=self._on_connected, on_state=self._set_connected
        )
        self.connection.start(startup_timeout_s)
        if self._expiry is not None:
            self._expiry.start()

    def _on_connected(self, session_present: bool, first: bool) -> None:
        if not first:
            self.metrics.reconnects.inc()
        if not session_present and not first:
            self.metrics.sessions_lost.inc()
            log.error(
                "mqtt broker did not keep our session: readings published while we were away are lost",
                extra={"client_id": self.settings.client_id},
            )
        if first or not session_present:
            # Retained messages only for a new subscription (MQTT 5): a resubscription must not
            # send old retained readings again. MQTT 3.1.1 sends them at every subscribe.
            if self.settings.protocol == "5":
                opts = SubscribeOptions(qos=self.settings.qos, retainHandling=1)
                self.client.subscribe([(t, opts) for t in self.settings.topics])
            else:
                self.client.subscribe([(t, self.settings.qos) for t in self.settings.topics])
        self._connected_once.set()

    # -- paho network thread -------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.metrics.messages.inc()
        if msg.dup:
            self.metrics.redeliveries.inc()
        topic, payload = msg.topic, bytes(msg.payload)
        digest = message_digest(topic, payload)
        if msg.dup and self.seen_before(digest):
            # A copy of a message scored and acknowledged before (the acknowledgement was lost
            # in a crash or restart), or of one still being scored (acknowledged with it: the
            # broker resends with the same packet id).
            self.metrics.duplicates.inc()
            with self._seen_lock:
                done = digest not in self._in_flight
            if msg.qos > 0 and done:
                client.ack(msg.mid, msg.qos)
            return
        token = None
        if msg.qos > 0:
            token = (msg.mid, msg.qos, digest)
            self.receiving(digest)
        try:
            if self.merger is not None:
                self._tag(topic, payload, token)
                return
            if self.settings.asset_from == "topic":
                asset = topic_level(topic, self.settings.asset_level)
                if asset is None:
                    raise InvalidMessage(
                        "bad_asset",
                        f"topic {topic!r} has no level {self.settings.asset_level} (mqtt.asset_level)",
                    )
            else:
                asset = _body_asset(payload)
            self.offer(topic, asset.encode(), payload, token)
        except InvalidMessage as exc:
            self.reject(topic, None, payload, token, exc.reason, exc.detail)

    def _tag(self, topic: str, payload: bytes, token: Any) -> None:
        assert self.merger is not None
        s = self.settings
        asset, sensor = topic_level(topic, s.asset_level), topic_level(topic, s.sensor_level)
        if asset is None or sensor is None:
            raise InvalidMessage(
                "bad_asset",
                f"topic {topic!r} lacks level {s.asset_level} or {s.sensor_level} (asset, sensor)",
            )
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage("bad_json", str(exc)[:120]) from None
        if type(body) is not dict or "value" not in body:
            raise InvalidMessage("bad_json", 'a tag message is {"ts": ..., "value": ...}')
        ts = parse_timestamp(body.get("ts"))
        value = body["value"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(float(value))
        ):
            raise InvalidMessage("non_numeric", f"tag {sensor!r} is {value!r}"[:120])
        self.merger.add(asset, sensor, ts, None if value is None else float(value), token, topic, payload)

    def _emit_merged(self, asset: str, ts: float, values: dict[str, float | None], tokens: list[Any]) -> None:
        # The journal keeps the merged reading (what the processor sees), with every tag's ack
        # token behind it: the first tag message carries them all, the rest none.
        value = encode_reading_object(asset, ts, values)
        self.offer(f"merged/{asset}", asset.encode(), value, _Tokens(tokens))

    def _late_tag(self, topic: str, payload: bytes, token: Any, detail: str) -> None:
        self.reject(topic, None, payload, token, "time_backwards", detail)

    def _expire_loop(self) -> None:
        assert self.merger is not None
        period = max(0.05, min(1.0, self.settings.tag_wait_seconds / 4))
        while not self._stop.wait(period):
            self.merger.expire()

    # -- processor thread ----------------------------------------------------------------

    def _acknowledge(self, token: Any) -> None:
        if isinstance(token, _Tokens):
            for t in token.tokens:
                self._acknowledge(t)
        elif token is not None:
            mid, qos, _ = token
            self.client.ack(mid, qos)

    def _digests(self, token: Any) -> list[str]:
        if isinstance(token, _Tokens):
            return [t[2] for t in token.tokens]
        return [token[2]] if token is not None else []

    def _disconnect(self) -> None:
        self._stop.set()
        self.connection.stop()
        self._set_connected(False)


class _Tokens:
    """The acknowledgement tokens of every tag merged into one reading."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: list[Any]) -> None:
        self.tokens = [t for t in tokens if t is not None]


def message_digest(topic: str, payload: bytes) -> str:
    """Identifies a message for duplicate detection (topic and payload; MQTT has no id that
    survives a redelivery to another connection)."""
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=12).hexdigest()


def _body_asset(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_json", str(exc)[:120]) from None
    asset = body.get("asset") if type(body) is dict else None
    if type(asset) is not str or not asset.strip():
        raise InvalidMessage(
            "bad_asset", "no 'asset' field (mqtt.asset_from = \"message\"; or name it by a topic level)"
        )
    return asset
