"""Edge daemon configuration: a TOML file, then environment overrides.

Why environment overrides: the same file ships to every gateway while secrets (SASL password)
and per-host values (client id, broker list) come from the systemd ``EnvironmentFile``.
Every key ``key`` of section ``[sec]`` is overridden by ``MEMAE_TS_<SEC>_<KEY>`` (upper case),
e.g. ``MEMAE_TS_KAFKA_BROKERS=10.0.0.5:9092,10.0.0.6:9092``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.processor import ProcessingConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "MEMAE_TS_"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass
class KafkaSection:
    brokers: list[str] = field(default_factory=lambda: ["127.0.0.1:9092"])
    input_topic: str = "memae-ts.readings"
    output_topic: str = "memae-ts.scores"
    dead_letter_topic: str = "memae-ts.readings.dlq"
    group_id: str = "memae-ts-edge"
    client_id: str = "memae-ts-edge"
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    request_timeout_ms: int = 30_000
    # Security, passed to kafka-python unchanged (empty = not set).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = ""
    ssl_check_hostname: bool = True

    def client_config(self) -> dict[str, Any]:
        """Settings shared by the consumer and the producer."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": list(self.brokers),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SSL") or self.security_protocol == "SASL_SSL":
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
        for key in (
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_password",
        ):
            value = getattr(self, key)
            if value:
                cfg[key] = value
        return cfg


@dataclass
class ModelSection:
    path: str = "/var/lib/memae-ts/model"
    engine: str = "auto"
    threads: int = 1  # C++ runtime threads per batch; scoring already has its own thread


@dataclass
class ProcessingSection:
    # The processor's own defaults, so the config file and the library cannot drift apart.
    batch_size: int = 5000
    poll_timeout_ms: int = ProcessingConfig.poll_timeout_ms
    top_sensors: int = ProcessingConfig.top_sensors
    backwards_tolerance_seconds: float = ProcessingConfig.backwards_tolerance_seconds
    max_assets: int = ProcessingConfig.max_assets
    max_rewind_messages: int = 100_000
    flush_timeout_seconds: float = ProcessingConfig.flush_timeout_s


@dataclass
class HttpSection:
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass
class LoggingSection:
    level: str = "INFO"


@dataclass
class EdgeConfig:
    kafka: KafkaSection = field(default_factory=KafkaSection)
    model: ModelSection = field(default_factory=ModelSection)
    processing: ProcessingSection = field(default_factory=ProcessingSection)
    http: HttpSection = field(default_factory=HttpSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    @classmethod
    def load(cls, path: str | Path | None, env: Mapping[str, str] | None = None) -> EdgeConfig:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cls.from_dict(data, os.environ if env is None else env)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], env: Mapping[str, str]) -> EdgeConfig:
        config = cls()
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown section(s): {sorted(unknown)}")
        for sec_field in dataclasses.fields(cls):
            section = getattr(config, sec_field.name)
            values = data.get(sec_field.name, {})
            if not isinstance(values, Mapping):
                raise ConfigError(f"[{sec_field.name}] must be a table")
            names = {f.name: f for f in dataclasses.fields(section)}
            for key, raw in values.items():
                if key not in names:
                    raise ConfigError(f"unknown key {sec_field.name}.{key}")
                name = f"{sec_field.name}.{key}"
                setattr(section, key, _coerce(name, raw, getattr(section, key)))
            for key in names:
                env_key = f"{ENV_PREFIX}{sec_field.name}_{key}".upper()
                if env_key in env:
                    setattr(section, key, _coerce(env_key, env[env_key], getattr(section, key)))
        config.validate()
        return config

    def validate(self) -> None:
        if not self.kafka.brokers:
            raise ConfigError("kafka.brokers is empty")
        if self.kafka.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("kafka.auto_offset_reset must be 'earliest' or 'latest'")
        if self.processing.batch_size < 1:
            raise ConfigError("processing.batch_size must be >= 1")
        if self.model.threads < 1:
            raise ConfigError("model.threads must be >= 1")
        if not 0 <= self.http.port < 65536:
            raise ConfigError("http.port out of range")


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Convert a TOML or environment value to the type of the default."""
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, list):
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                return list(raw)
            raise ValueError(raw)
        if isinstance(default, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(raw, (dict, list)):
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {raw!r} as {type(default).__name__}") from None
