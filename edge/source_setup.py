"""Builds the daemon's source and sinks from ``[source]``: Kafka (the default, unchanged), MQTT
or OPC UA in; Kafka and/or MQTT out (docs/edge.md, "Sources").

Why here and not in edge/daemon.py: the MQTT and OPC UA clients are optional extras
(``memae-ts[mqtt]``, ``memae-ts[opcua]``); they are imported only when the config asks for
them, so a Kafka-only gateway needs neither, and a missing one is a config error that says
which extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memae_ts.connectors.sources import SourceConfigError, SourceMetrics, SourceUnavailable, TeeSink
from memae_ts.edge.config import ConfigError, EdgeConfig


def outputs_of(config: EdgeConfig) -> list[str]:
    out = list(dict.fromkeys(config.source.outputs))
    if not out:
        out = ["mqtt"] if config.source.kind == "mqtt" else ["kafka"]
    return out


def source_exit_status(exc: BaseException) -> int | None:
    """The daemon's exit status for a start failure of an MQTT/OPC UA client (edge/daemon.py):
    2 for what the configuration must fix (credentials, TLS, a missing extra), 1 for a broker
    or server that is not there (the supervisor tries again); None: not ours."""
    if isinstance(exc, (ConfigError, SourceConfigError)):
        return 2
    if isinstance(exc, SourceUnavailable):
        return 1
    return None


def _extra(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"source.kind/outputs need {module!r}: pip install 'memae-ts[{extra}]'") from None


def build_sink(config: EdgeConfig, kafka_sink: Callable[[], Any]) -> Any:
    """The sinks named by ``source.outputs`` (one, or a tee of both)."""
    sinks: list[Any] = []
    try:
        for out in outputs_of(config):
            if out == "kafka":
                sinks.append(kafka_sink())
            else:
                _extra("paho.mqtt.client", "mqtt")
                from memae_ts.connectors.mqtt_sink import MqttSink

                sinks.append(MqttSink(config.mqtt, config.source.startup_timeout_seconds))
    except BaseException:
        for s in sinks:
            s.close(timeout_s=0.5)
        raise
    return sinks[0] if len(sinks) == 1 else TeeSink(sinks)


def local_source_factory(
    config: EdgeConfig,
    registry: Any,
    sensors: list[str] | Callable[[str], list[str]],
    sink: Any,
    dead_letter_counter: Any,
) -> Callable[..., Any]:
    """A ``source_factory`` for :class:`~connectors.processor.StreamProcessor` building the MQTT
    or OPC UA source; dead letters the source finds itself (a malformed tag, a topic with no
    asset) go to ``sink`` and are counted like the processor's."""
    kind = config.source.kind
    metrics = SourceMetrics(kind, registry)
    p = config.processing

    def dead_letter(key: Any, value: Any, reason: str, detail: str, origin: tuple[str, int, int]) -> None:
        dead_letter_counter.labels(reason=reason).inc()
        sink.dead_letter(key, value, reason, detail, origin)

    def factory(on_revoked: Any, on_assigned: Any, on_rewound: Any) -> Any:
        source: Any
        options: dict[str, Any] = {
            "batch_size": p.batch_size,
            "state_dir": config.source.state_dir,
            "max_journal": p.max_rewind_messages,
            "startup_timeout_s": config.source.startup_timeout_seconds,
        }
        if kind == "mqtt":
            _extra("paho.mqtt.client", "mqtt")
            from memae_ts.connectors.mqtt_source import MqttSource

            source = MqttSource(config.mqtt, sensors, metrics, **options)
        else:
            _extra("asyncua", "opcua")
            from memae_ts.connectors.opcua_source import OpcuaSource

            source = OpcuaSource(config.opcua, metrics, **options)
        source.dead_letter = dead_letter
        source.flush_sink = lambda: sink.flush(p.flush_timeout_seconds)
        source.bind(on_rewound)
        return source

    return factory
