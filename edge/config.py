"""Edge daemon configuration: a TOML file, then environment overrides.

Why environment overrides: the same file ships to every gateway while per-host values (client
id, broker list, static group member id) come from the systemd unit or its ``EnvironmentFile``.
Every key ``key`` of section ``[sec]`` is overridden by ``MEMAE_TS_<SEC>_<KEY>`` (upper case),
e.g. ``MEMAE_TS_KAFKA_BROKERS=10.0.0.5:9092,10.0.0.6:9092``.

Why secrets from files: a password in the TOML (or in the environment, which every process of
the user can read in /proc) ends up in backups and support bundles. ``sasl_plain_password_file``
and ``ssl_password_file`` name a file holding it (one line); a relative name is looked up in
``$CREDENTIALS_DIRECTORY``, where systemd's ``LoadCredential=`` puts it readable only by the
service. The inline keys and their environment variables still work; setting both is an error.
"""

from __future__ import annotations

import dataclasses
import os
import re
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
    # How partitions move when members join or leave: "cooperative-sticky" moves only the
    # partitions that must move; "range" is the eager protocol of older daemons (every member
    # gives up everything at every rebalance). One group must use one of them.
    partition_assignment: str = "cooperative-sticky"
    # Static membership: a member that comes back with the same id within session_timeout_ms
    # gets its partitions back without a rebalance (a restart moves nothing). Unique per
    # daemon in the group; the systemd unit sets it to the host name. Empty: dynamic member.
    group_instance_id: str = ""
    # Security, passed to kafka-python unchanged (empty = not set).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""
    sasl_plain_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = ""
    ssl_password_file: str = ""
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


def read_secret(key: str, path: str, env: Mapping[str, str]) -> str:
    """The secret in ``path`` (a relative path: in ``$CREDENTIALS_DIRECTORY``), without the
    line end; a missing or empty file is a :class:`ConfigError` naming the key."""
    file = Path(path)
    if not file.is_absolute():
        creds = env.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ConfigError(
                f"{key}: {path!r} is relative but CREDENTIALS_DIRECTORY is not set "
                "(systemd LoadCredential=); give an absolute path"
            )
        file = Path(creds) / file
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {file}: {exc.__class__.__name__}: {exc}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{key}: {file} is empty")
    return secret


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
    # Asset ids (or shell patterns such as "pump-*") accepted; others are dead letters
    # (unknown_asset). Empty: every asset.
    assets: list[str] = field(default_factory=list)


@dataclass
class HttpSection:
    host: str = "127.0.0.1"
    port: int = 9108
    max_connections: int = 64  # open at once; more are closed at once (idle ones cost no thread)
    timeout_seconds: float = 5.0  # to send a request; an idle or slow client is dropped after it
    # /readyz answers 503 when the broker has not answered for this long.
    broker_timeout_seconds: float = 30.0
    # How often the lag monitor asks the broker for the end offsets (beside the loop).
    lag_interval_seconds: float = 5.0


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
        config.load_secrets(env)
        return config

    def load_secrets(self, env: Mapping[str, str]) -> None:
        """Read ``*_file`` secrets into their keys (module docstring)."""
        k = self.kafka
        for key in ("sasl_plain_password", "ssl_password"):
            path = getattr(k, f"{key}_file")
            if not path:
                continue
            if getattr(k, key):
                raise ConfigError(f"kafka.{key} and kafka.{key}_file are both set; keep one")
            setattr(k, key, read_secret(f"kafka.{key}_file", path, env))

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
        if (
            self.http.max_connections < 1
            or self.http.timeout_seconds <= 0
            or self.http.lag_interval_seconds <= 0
        ):
            raise ConfigError(
                "http.max_connections, timeout_seconds and lag_interval_seconds must be positive"
            )
        if self.kafka.partition_assignment not in ("cooperative-sticky", "range", "roundrobin"):
            raise ConfigError(
                "kafka.partition_assignment must be 'cooperative-sticky', 'range' or 'roundrobin'"
            )
        instance = self.kafka.group_instance_id
        if instance and (
            len(instance) > 249 or instance in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", instance)
        ):
            raise ConfigError(
                f"kafka.group_instance_id {instance!r}: up to 249 of A-Z a-z 0-9 . _ - (not '.' or '..')"
            )
        if self.processing.flush_timeout_seconds <= 0:
            raise ConfigError("processing.flush_timeout_seconds must be positive")


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
