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

from memae_ts.connectors.processor import ProcessingConfig

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
    # Alarm episode records (opened and closed, key = asset; docs/edge.md). Empty: not sent.
    episodes_topic: str = "memae-ts.episodes"
    group_id: str = "memae-ts-edge"
    client_id: str = "memae-ts-edge"
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    request_timeout_ms: int = 30_000
    # How partitions move when members join or leave: "cooperative-sticky" moves only the
    # partitions that must move; "range" is the eager protocol of older daemons (every member
    # gives up everything at every rebalance). One group must use one of them.
    partition_assignment: str = "cooperative-sticky"
    # Rebalance watchdog: a consumer whose group join has not completed for this long while
    # the broker answers is replaced by a new one (logged, memae_ts_kafka_rebalance_stuck_total).
    # 0: max(3 x session_timeout_ms, 60 s).
    rebalance_stuck_seconds: float = 0.0
    # Short of a full batch, a poll waits this long for more readings before scoring: every
    # poll ends in a flush and a commit, so small polls at a moderate rate cost more CPU than
    # the scoring. Trades latency for CPU (docs/edge.md, section 5). 0 = score what is there.
    linger_ms: int = 0
    # Checkpoint (flush the score records, then commit the offsets) at most this often; 0:
    # after every poll. Each commit is a request the broker writes to its offsets log: at
    # moderate rates, committing every poll costs the broker more CPU than the readings
    # (docs/edge.md, section 5). At-least-once stays correct: a restart re-reads from the last
    # commit (more duplicates after a crash, at most this interval's readings); a stop, a
    # revocation and a model reload still commit first. Exactly-once commits every poll.
    commit_interval_ms: int = 0
    # The consumer's fetch (librdkafka fetch.wait.max.ms / fetch.min.bytes): the broker answers
    # once it holds fetch_min_bytes of new readings or fetch_wait_max_ms has passed.
    fetch_wait_max_ms: int = 500
    fetch_min_bytes: int = 1
    # Static membership: a member that comes back with the same id within session_timeout_ms
    # gets its partitions back without a rebalance (a restart moves nothing). Unique per
    # daemon in the group; the systemd unit sets it to the host name. Empty: dynamic member.
    group_instance_id: str = ""
    # Exactly-once delivery ([processing] delivery = "exactly-once"): the producer's
    # transactional.id, unique per daemon and the same across its restarts, so a restart
    # aborts what the killed process left open at once. Empty: "memae-ts:<group_id>:<
    # group_instance_id or client_id>". An open transaction of a dead daemon with another id
    # is aborted by the broker after transaction_timeout_ms (read_committed readers of the
    # score topic wait that long).
    transactional_id: str = ""
    transaction_timeout_ms: int = 10_000
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
    # A [[model]] section's name (metrics label ``model``, score record field ``model``) and
    # the asset ids or shell patterns it serves (docs/edge.md, "Several models"). The single
    # [model] section is named "default" and serves every asset (processing.assets still applies).
    name: str = "default"
    assets: list[str] = field(default_factory=list)
    # Drift following (memae_ts.detection.following, docs: "Following slow drift"): off unless set.
    follow_drift: bool = False
    follow_below: float = 0.5  # only windows below this normalised level update the memory
    follow_rate: float = 0.001  # step per window, as a fraction of the way to its encoding
    follow_max_drift: float = 0.25  # bound on a slot's total drift, relative to its trained norm
    follow_warmup: float = 100.0  # windows' worth of weight a slot's baseline is learned from
    # "signal": load the bundle again on SIGHUP only; "on-change": also when its files change
    # (looked at every reload_check_seconds; acted on once they stayed the same for one look),
    # this model only. A bundle that fails to load is refused once per version; the old serves.
    reload: str = "signal"
    reload_check_seconds: float = 5.0

    def follow_settings(self) -> Any:
        """FollowSettings when follow_drift is on, else None."""
        if not self.follow_drift:
            return None
        from memae_ts.detection.following import FollowSettings

        return FollowSettings(self.follow_below, self.follow_rate, self.follow_max_drift, self.follow_warmup)


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
    # Score every hop-th window end per asset, on the clock (memae_ts.detection.hop; docs/edge.md
    # "Scoring hop"): the engine does 1/hop of the work, an anomaly is seen up to hop-1
    # readings later. 1: every window.
    hop: int = ProcessingConfig.hop
    # "at-least-once" (a crash between acknowledgement and commit scores some readings twice)
    # or "exactly-once" (Kafka transactions, connectors/kafka_txn.py; docs/edge.md "Delivery
    # guarantees"): Kafka source and Kafka output only.
    delivery: str = "at-least-once"
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
class SourceSection:
    """Where readings come from and where scores go (docs/edge.md, "Sources")."""

    kind: str = "kafka"  # "kafka" | "mqtt" | "opcua"
    # Sinks of scores and dead letters: "kafka" and/or "mqtt". Empty: the source's own kind
    # (kafka -> kafka, mqtt -> mqtt); an opcua source must name them.
    outputs: list[str] = field(default_factory=list)
    # MQTT/OPC UA: a folder for the journal of the messages the windows still need, written at
    # every checkpoint, so a restart rebuilds the windows instead of warming up again. Empty:
    # every asset warms up again after a restart (window - 1 readings without a score).
    state_dir: str = ""
    # A broker or OPC UA server not reachable at start is waited for this long, then exit 1.
    startup_timeout_seconds: float = 60.0


@dataclass
class MqttSection:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str = "memae-ts-edge"  # the persistent session's owner: unique per gateway
    keepalive_seconds: int = 30
    topics: list[str] = field(default_factory=lambda: ["memae-ts/readings/+"])
    payload: str = "reading"  # "reading" (the Kafka JSON contract) or "tag" (one topic per tag)
    asset_from: str = "topic"  # "topic" (level asset_level) or "message" (its "asset" field)
    asset_level: int = 2  # 0-based topic level naming the asset
    sensor_level: int = 3  # tag form: 0-based topic level naming the sensor
    tag_wait_seconds: float = 5.0  # tag form: close an incomplete reading this long after its first tag
    qos: int = 1
    session_expiry_seconds: int = 7 * 86_400  # MQTT 5: how long the broker keeps our session offline
    receive_maximum: int = 10_000  # MQTT 5: unacknowledged readings the broker may send us
    max_inflight: int = 1000  # score records in flight to the broker at once
    reconnect_max_seconds: float = 30.0
    score_topic: str = "memae-ts/scores/{asset}"
    dead_letter_topic: str = "memae-ts/dead-letters"
    # Alarm episode records (opened and closed; the Kafka episodes topic's records, byte for
    # byte), "{asset}" replaced. Empty: not sent over MQTT.
    episodes_topic: str = "memae-ts/episodes/{asset}"
    username: str = ""
    password: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""  # empty with tls: the system's trusted CAs
    cert_file: str = ""  # client certificate (mutual TLS), optional
    key_file: str = ""
    key_password: str = ""
    key_password_file: str = ""
    check_hostname: bool = True


@dataclass
class OpcuaSection:
    endpoint: str = "opc.tcp://127.0.0.1:4840"
    # asset -> {node id -> sensor}: [opcua.nodes."pump-7"] "ns=2;s=Pump7.Pressure" = "Pressure"
    nodes: dict[str, Any] = field(default_factory=dict)
    sampling_interval_ms: float = 1000.0
    tick_seconds: float = 0.0  # readings per tick of this length (0: the sampling interval)
    tick_wait_seconds: float = 2.0  # close a tick this long (wall clock) after its first value
    queue_size: int = 10  # values the server keeps per node between publishes
    security: str = ""  # asyncua security string, e.g. "Basic256Sha256,SignAndEncrypt,cert.pem,key.pem"
    # Or the same settings one by one (docs/edge.md, "OPC UA security"); not both. Empty policy:
    # no security (the server must offer an endpoint without it).
    security_policy: str = ""  # "Basic256Sha256", "Aes128Sha256RsaOaep" or "Aes256Sha256RsaPss"
    security_mode: str = "SignAndEncrypt"  # or "Sign"
    certificate_file: str = ""  # the gateway's application instance certificate (DER or PEM)
    private_key_file: str = ""  # its private key (PEM or DER, not encrypted)
    # The server certificate to trust (DER or PEM): another one at the endpoint is refused.
    # Empty: whatever the server presents is trusted (logged as a warning at every connection).
    server_certificate_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    reconnect_min_seconds: float = 1.0
    reconnect_max_seconds: float = 30.0
    timeout_seconds: float = 10.0


@dataclass
class EdgeConfig:
    kafka: KafkaSection = field(default_factory=KafkaSection)
    model: ModelSection = field(default_factory=ModelSection)
    processing: ProcessingSection = field(default_factory=ProcessingSection)
    http: HttpSection = field(default_factory=HttpSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    source: SourceSection = field(default_factory=SourceSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    opcua: OpcuaSection = field(default_factory=OpcuaSection)
    # Every model served: the one [model] section, or each [[model]] section in file order.
    models: list[ModelSection] = field(default_factory=list)

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
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)} | ({"models"} & set(data))
        if unknown:
            raise ConfigError(f"unknown section(s): {sorted(unknown)}")
        data = dict(data)
        model_list = data.pop("model") if isinstance(data.get("model"), list) else None
        for sec_field in dataclasses.fields(cls):
            if sec_field.name == "models":
                continue
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
        config.models = [config.model] if model_list is None else _model_sections(model_list, env)
        if model_list is not None:
            config.model = config.models[0]
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
        for name, section, key in (
            ("mqtt", self.mqtt, "password"),
            ("mqtt", self.mqtt, "key_password"),
            ("opcua", self.opcua, "password"),
        ):
            path = getattr(section, f"{key}_file")
            if not path:
                continue
            if getattr(section, key):
                raise ConfigError(f"{name}.{key} and {name}.{key}_file are both set; keep one")
            setattr(section, key, read_secret(f"{name}.{key}_file", path, env))

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
        if not 0 <= self.kafka.linger_ms <= 1000:
            raise ConfigError(
                "kafka.linger_ms must be between 0 and 1000 (milliseconds a poll waits for a batch)"
            )
        if not 0 <= self.kafka.commit_interval_ms <= 60_000:
            raise ConfigError(
                "kafka.commit_interval_ms must be between 0 and 60000 (milliseconds between commits; "
                "0: after every poll)"
            )
        if not 0 <= self.kafka.fetch_wait_max_ms <= 60_000:
            raise ConfigError(
                "kafka.fetch_wait_max_ms must be between 0 and 60000 (ms the broker may hold a fetch)"
            )
        if not 1 <= self.kafka.fetch_min_bytes <= 100_000_000:
            raise ConfigError("kafka.fetch_min_bytes must be between 1 and 100000000 (bytes)")
        if self.kafka.rebalance_stuck_seconds < 0:
            raise ConfigError("kafka.rebalance_stuck_seconds must be >= 0 (0: max(3 x session timeout, 60s))")
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
        hop = self.processing.hop
        if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
            raise ConfigError(f"processing.hop must be a whole number >= 1, got {self.processing.hop!r}")
        if self.processing.flush_timeout_seconds <= 0:
            raise ConfigError("processing.flush_timeout_seconds must be positive")
        delivery = self.processing.delivery
        if delivery not in ("at-least-once", "exactly-once"):
            raise ConfigError(f"processing.delivery: 'at-least-once' or 'exactly-once', not {delivery!r}")
        if self.processing.delivery == "exactly-once" and (
            self.source.kind != "kafka" or any(out != "kafka" for out in self.source.outputs)
        ):
            raise ConfigError(
                "processing.delivery = 'exactly-once' needs a Kafka source and Kafka output only "
                "(MQTT and OPC UA have no transactions)"
            )
        _validate_source_sections(self)
        for section in self.models:
            if section.threads < 1:
                raise ConfigError(f"model {section.name!r}: model.threads must be >= 1")
            if section.reload not in ("signal", "on-change"):
                raise ConfigError(
                    f"model {section.name!r}: model.reload {section.reload!r}: 'signal' or 'on-change'"
                )
            if not section.reload_check_seconds > 0:
                raise ConfigError(f"model {section.name!r}: model.reload_check_seconds must be positive")
            try:
                settings = section.follow_settings()
                if settings is not None:
                    settings.check()
            except ValueError as exc:
                raise ConfigError(f"model {section.name!r}: {exc}") from None
        check_model_routes(self.models)


def _validate_source_sections(config: EdgeConfig) -> None:
    src, m, o = config.source, config.mqtt, config.opcua
    if src.kind not in ("kafka", "mqtt", "opcua"):
        raise ConfigError(f"source.kind {src.kind!r}: must be 'kafka', 'mqtt' or 'opcua'")
    for out in src.outputs:
        if out not in ("kafka", "mqtt"):
            raise ConfigError(f"source.outputs: {out!r} is not 'kafka' or 'mqtt'")
    if src.kind == "opcua" and not src.outputs:
        raise ConfigError("source.outputs: an opcua source needs outputs = [\"mqtt\"] and/or [\"kafka\"]")
    if src.kind == "mqtt" or "mqtt" in src.outputs:
        if m.protocol not in ("5", "3.1.1"):
            raise ConfigError(f"mqtt.protocol {m.protocol!r}: must be '5' or '3.1.1'")
        if not 0 < m.port < 65536:
            raise ConfigError("mqtt.port out of range")
        if m.qos not in (0, 1):
            raise ConfigError("mqtt.qos must be 0 or 1 (1: nothing lost across a reconnect)")
        if "{asset}" not in m.score_topic and "+" in m.score_topic:
            raise ConfigError("mqtt.score_topic must not contain wildcards")
        if "+" in m.episodes_topic or "#" in m.episodes_topic:
            raise ConfigError(f"mqtt.episodes_topic {m.episodes_topic!r} must not contain wildcards (+ #)")
        if not m.client_id.strip():
            raise ConfigError("mqtt.client_id is empty (the persistent session belongs to it)")
    if src.kind == "mqtt":
        if not m.topics:
            raise ConfigError("mqtt.topics is empty")
        if m.payload not in ("reading", "tag"):
            raise ConfigError(f"mqtt.payload {m.payload!r}: must be 'reading' or 'tag'")
        if m.asset_from not in ("topic", "message"):
            raise ConfigError(f"mqtt.asset_from {m.asset_from!r}: must be 'topic' or 'message'")
        if m.payload == "tag" and m.asset_from != "topic":
            raise ConfigError(
                "mqtt.payload = 'tag' needs asset_from = 'topic' (asset and sensor are topic levels)"
            )
        if m.asset_level < 0 or m.sensor_level < 0:
            raise ConfigError("mqtt.asset_level and mqtt.sensor_level count topic levels from 0")
        if m.tag_wait_seconds <= 0:
            raise ConfigError("mqtt.tag_wait_seconds must be positive")
    if src.kind == "opcua":
        if not o.nodes:
            raise ConfigError('opcua.nodes is empty: [opcua.nodes."<asset>"] "<node id>" = "<sensor>"')
        for asset, mapping in o.nodes.items():
            if not isinstance(mapping, Mapping) or not mapping or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                raise ConfigError(f"opcua.nodes.{asset}: a table of node id = sensor name (strings)")
        if o.sampling_interval_ms <= 0 or o.tick_seconds < 0 or o.tick_wait_seconds <= 0:
            raise ConfigError("opcua.sampling_interval_ms and tick_wait_seconds must be positive")
        _validate_opcua_security(o)


OPCUA_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")


def _validate_opcua_security(o: OpcuaSection) -> None:
    if not o.security_policy:
        for key in ("certificate_file", "private_key_file", "server_certificate_file"):
            if getattr(o, key):
                raise ConfigError(f"opcua.{key} is set but opcua.security_policy is empty")
        return
    if o.security:
        raise ConfigError("opcua.security and opcua.security_policy are both set; keep one")
    if o.security_policy not in OPCUA_POLICIES:
        raise ConfigError(f"opcua.security_policy {o.security_policy!r}: one of {', '.join(OPCUA_POLICIES)}")
    if o.security_mode not in ("Sign", "SignAndEncrypt"):
        raise ConfigError(f"opcua.security_mode {o.security_mode!r}: 'Sign' or 'SignAndEncrypt'")
    for key in ("certificate_file", "private_key_file"):
        if not getattr(o, key):
            raise ConfigError(f"opcua.{key} is required with opcua.security_policy")
    for key in ("certificate_file", "private_key_file", "server_certificate_file"):
        path = getattr(o, key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"opcua.{key}: cannot read {path}")


def _model_sections(raw: list[Any], env: Mapping[str, str]) -> list[ModelSection]:
    """The [[model]] sections: each a table with a unique ``name``, a ``path`` and ``assets``."""
    stray = sorted(k for k in env if k.startswith(f"{ENV_PREFIX}MODEL_"))
    if stray:
        raise ConfigError(
            f"{stray[0]} applies to a single [model] section; with [[model]] sections set it in the file"
        )
    if not raw:
        raise ConfigError("[[model]]: at least one model section is needed")
    names = {f.name: f for f in dataclasses.fields(ModelSection)}
    sections: list[ModelSection] = []
    for i, values in enumerate(raw):
        if not isinstance(values, Mapping):
            raise ConfigError(f"[[model]] number {i + 1} must be a table")
        label = f"[[model]] number {i + 1}"
        for required in ("name", "path"):
            if not isinstance(values.get(required), str) or not values[required].strip():
                raise ConfigError(f"{label}: {required} is required (a non-empty string)")
        section = ModelSection()
        label = f"model {values['name']!r}"
        for key, value in values.items():
            if key not in names:
                raise ConfigError(f"{label}: unknown key model.{key}")
            setattr(section, key, _coerce(f"{label}: model.{key}", value, getattr(section, key)))
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", section.name):
            raise ConfigError(f"{label}: name must be 1 to 64 of A-Z a-z 0-9 . _ -")
        if any(s.name == section.name for s in sections):
            raise ConfigError(f"{label}: two [[model]] sections have this name")
        if not section.assets and len(raw) > 1:
            raise ConfigError(
                f"{label}: assets is empty; with several [[model]] sections each lists its assets"
            )
        sections.append(section)
    return sections


def check_model_routes(models: list[ModelSection]) -> None:
    """Refuse two models that could serve one asset: the error names both and an asset id
    matched by both (docs/edge.md, "Several models"). Patterns are shell patterns (``*``, ``?``,
    ``[...]``); whether two can match one name is decided exactly by intersecting them as regular
    languages (interegular), not by trying names."""
    for i, first in enumerate(models):
        for second in models[i + 1 :]:
            for a in first.assets:
                for b in second.assets:
                    example = shared_match(a, b)
                    if example is not None:
                        raise ConfigError(
                            f"asset {example!r} would be served by two models: model {first.name!r} "
                            f"(assets {a!r}) and model {second.name!r} (assets {b!r}); "
                            "make their asset lists disjoint"
                        )


def _glob_regex(pattern: str) -> str:
    """A shell pattern (fnmatch rules: ``*``, ``?``, ``[seq]``, ``[!seq]``) as a regex."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal '[' (as fnmatch)
                out.append(re.escape(c))
                continue
            body = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = "".join("\\" + ch if ch in "^[]" else ch for ch in body)
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def shared_match(a: str, b: str) -> str | None:
    """An asset id both shell patterns match, or None when no id matches both."""
    import interegular

    if a == b:
        return a
    first, second = (interegular.parse_pattern(_glob_regex(p)).to_fsm() for p in (a, b))
    both = first & second
    if both.empty():
        return None
    for chars in both.strings():
        return "".join(c if isinstance(c, str) else "?" for c in chars)
    return None


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
        if isinstance(default, dict):
            if isinstance(raw, Mapping):
                return dict(raw)
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
