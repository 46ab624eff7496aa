"""One place that turns the ``[mqtt]`` config section into a connected paho-mqtt client.

Why a persistent session on both protocol versions: with QoS 1 the broker keeps, for a client
id whose session persists, every message published while the client was away (and every one
it delivered but did not get a PUBACK for) and delivers them when the client comes back. That
is MQTT's only way to lose nothing across a reconnect or a restart. MQTT 5 says so with
``clean_start=False`` plus a *session expiry interval* (0, the MQTT 5 default, would drop the
session at disconnect); MQTT 3.1.1 with ``clean_session=False`` (kept until the broker's
``persistent_client_expiration``). A reconnect where the broker reports ``session present =
0`` means that the session was lost (broker restarted without persistence, expiry passed):
logged and counted, never silent.

Why a fixed client id: the session belongs to it. Two daemons with the same id take the
session from each other (the broker disconnects the older one): give each gateway its own.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from memae_ts.connectors.sources import SourceConfigError, SourceUnavailable
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


class MqttConfigError(SourceConfigError):
    """The broker refused our credentials, or TLS cannot be set up (exit status 2)."""


class MqttUnavailable(SourceUnavailable):
    """No broker within the start deadline (exit status 1; the supervisor tries again)."""


# CONNACK reason codes that a retry cannot fix: bad credentials, not authorised, banned, bad id.
_FATAL_CONNACK = {"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"}


def protocol_of(version: str) -> mqtt.MQTTProtocolVersion:
    return mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311


def make_client(settings: Any, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho client with protocol, credentials and TLS from ``settings`` (edge.config.MqttSection)."""
    protocol = protocol_of(settings.protocol)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else False,
        manual_ack=manual_ack,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password or None)
    if settings.tls:
        try:
            context = ssl.create_default_context(cafile=settings.ca_file or None)
            if settings.cert_file:
                context.load_cert_chain(
                    settings.cert_file, settings.key_file or None, settings.key_password or None
                )
            context.check_hostname = settings.check_hostname
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(f"mqtt TLS files: {exc}") from None
        client.tls_set_context(context)
    client.reconnect_delay_set(1, max(1, int(settings.reconnect_max_seconds)))
    # Outgoing QoS 1 messages in flight at once (score records): the default of 20 would make
    # every flush wait for round trips of 20 records.
    client.max_inflight_messages_set(max(20, settings.max_inflight))
    return client


def connect_properties(settings: Any) -> Properties | None:
    if settings.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = int(settings.session_expiry_seconds)
    # How many unacknowledged QoS 1 messages the broker may send us: readings wait for their
    # PUBACK until their scores are out, so this bounds what one batch can hold.
    props.ReceiveMaximum = max(1, min(65535, int(settings.receive_maximum)))
    return props


class Connection:
    """Connect once at start (waiting for a broker that is restarting up to the deadline), then
    let paho's network thread reconnect with backoff; ``on_connected(session_present, first)``
    is called on that thread for every successful connection."""

    def __init__(
        self,
        client: mqtt.Client,
        settings: Any,
        name: str,
        on_connected: Callable[[bool, bool], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.name = name
        self.connected = threading.Event()
        self._first = True
        self._failure: str | None = None
        self._on_connected = on_connected
        self._on_state = on_state
        self.connections = 0
        self._stopping = False
        client.on_connect = self._connect_cb
        client.on_disconnect = self._disconnect_cb

    def _connect_cb(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            text = str(reason)
            log.error("mqtt broker refused the connection", extra={"client": self.name, "reason": text})
            if text in _FATAL_CONNACK:
                self._failure = text
            return
        self.connections += 1
        first, self._first = self._first, False
        present = bool(flags.session_present)
        log.info(
            "mqtt connected",
            extra={"client": self.name, "session_present": present, "first": first},
        )
        if self._on_connected is not None:
            self._on_connected(present, first)
        self.connected.set()
        if self._on_state is not None:
            self._on_state(True)

    def _disconnect_cb(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._stopping:
            log.info("mqtt disconnected", extra={"client": self.name})
        elif self.connected.is_set():
            log.warning("mqtt disconnected; reconnecting", extra={"client": self.name, "reason": str(reason)})
        self.connected.clear()
        if self._on_state is not None:
            self._on_state(False)

    def start(self, timeout_s: float) -> None:
        s = self.settings
        deadline = time.monotonic() + timeout_s
        props = connect_properties(s)
        clean_start = False if s.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        while True:
            try:
                self.client.connect(
                    s.host, s.port, s.keepalive_seconds, clean_start=clean_start, properties=props
                )
                break
            except ssl.SSLError as exc:  # untrusted certificate, wrong host name: config, not outage
                raise MqttConfigError(f"mqtt TLS handshake with {s.host}:{s.port} failed: {exc}") from None
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise MqttUnavailable(f"mqtt broker {s.host}:{s.port} unreachable: {exc}") from None
                log.warning("mqtt broker not reachable yet; retrying", extra={"error": repr(exc)})
                time.sleep(1.0)
        self.client.loop_start()
        while not self.connected.wait(0.1):
            if self._failure is not None:
                self.stop()
                raise MqttConfigError(f"mqtt broker {s.host}:{s.port} refused us: {self._failure}")
            if time.monotonic() >= deadline:
                self.stop()
                raise MqttUnavailable(f"mqtt broker {s.host}:{s.port} did not accept the connection")

    def stop(self) -> None:
        self._stopping = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
