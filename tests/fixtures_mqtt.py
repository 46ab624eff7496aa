"""pytest fixtures for the MQTT tests: a real Mosquitto broker per test (tests/mqtt_service.py)
and plant-side MQTT clients that publish readings and collect scores; all stopped at teardown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mqtt_service import MosquittoBroker, missing_reason
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    started: list[MosquittoBroker] = []

    def make(name: str = "broker", **kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / name, **kwargs).start()
        started.append(broker)
        return broker

    yield make
    for b in started:
        b.stop()


class Client:
    """A plant-side MQTT client: publishes readings (QoS 1) and collects what arrives on the
    topics it subscribes to. Persistent session, so a broker restart loses nothing for it."""

    def __init__(self, broker: MosquittoBroker, name: str, subscribe: tuple[str, ...] = (), **tls: Any):
        self.received: list[tuple[str, bytes]] = []
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        if tls:
            self.client.tls_set(ca_certs=str(tls["ca"]))
            self.client.username_pw_set(tls["user"], tls["password"])
        self.connected = threading.Event()
        self.sessions_present: list[bool] = []  # per connection: did the broker keep our session?

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self.sessions_present.append(bool(flags.session_present))
            if subscribe and not flags.session_present:
                client.subscribe([(t, 1) for t in subscribe])
            self.connected.set()

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.received.append((msg.topic, bytes(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(
            "localhost" if tls else "127.0.0.1", broker.port, clean_start=False, properties=props
        )
        self.client.loop_start()
        assert self.connected.wait(10)
        if subscribe:
            time.sleep(0.2)  # the SUBACK

    def unacknowledged(self) -> int:
        return sum(not info._published for info in self.infos)

    def publish(self, items: list[tuple[str, bytes]], rate: float = 0.0) -> None:
        infos = self.infos
        start = time.monotonic()
        for i, (topic, payload) in enumerate(items):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            infos.append(self.client.publish(topic, payload, qos=1))
        deadline = time.monotonic() + 120
        for info in infos:
            while not info._published:  # through a broker restart (not_connected rc is fine)
                assert time.monotonic() < deadline, "publications not acknowledged"
                time.sleep(0.01)

    def messages(self, prefix: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p in self.received if t.startswith(prefix)]

    def wait(self, prefix: str, n: int, timeout: float = 60.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages(prefix)) < n:
            time.sleep(0.05)
        time.sleep(0.3)  # extras (duplicates) already on their way
        return self.messages(prefix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _Rec:
    def __init__(self, payload: bytes) -> None:
        self.value = payload

    def json(self) -> Any:
        return json.loads(self.value)


def records(messages: list[tuple[str, bytes]]) -> list[_Rec]:
    return [_Rec(p) for _, p in messages]


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        c = Client(*args, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
