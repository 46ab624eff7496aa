"""edge.toml plus MEMAE_TS_<SECTION>_<KEY> environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from memae_ts.edge.config import ConfigError, EdgeConfig

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "edge" / "deploy" / "edge.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_file_values_then_environment_overrides(tmp_path):
    path = write(
        tmp_path,
        '[kafka]\nbrokers = ["k1:9092"]\ngroup_id = "plant-a"\n[processing]\nbatch_size = 64\n',
    )
    env = {
        "MEMAE_TS_KAFKA_BROKERS": "k2:9093, k3:9093",
        "MEMAE_TS_PROCESSING_BATCH_SIZE": "128",
        "MEMAE_TS_KAFKA_SSL_CHECK_HOSTNAME": "false",
        "MEMAE_TS_HTTP_PORT": "9200",
        "UNRELATED": "x",
    }
    cfg = EdgeConfig.load(path, env)
    assert cfg.kafka.brokers == ["k2:9093", "k3:9093"]
    assert cfg.kafka.group_id == "plant-a"
    assert cfg.processing.batch_size == 128
    assert cfg.kafka.ssl_check_hostname is False
    assert cfg.http.port == 9200


def test_security_settings_reach_the_kafka_client_unchanged(tmp_path):
    cfg = EdgeConfig.load(
        write(
            tmp_path,
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
            'sasl_plain_username = "edge"\nssl_cafile = "/etc/ca.pem"\n',
        ),
        {"MEMAE_TS_KAFKA_SASL_PLAIN_PASSWORD": "s3cret"},
    )
    client = cfg.kafka.client_config()
    assert client["security_protocol"] == "SASL_SSL"
    assert client["sasl_mechanism"] == "SCRAM-SHA-512"
    assert client["sasl_plain_username"] == "edge"
    assert client["sasl_plain_password"] == "s3cret"
    assert client["ssl_cafile"] == "/etc/ca.pem"
    assert client["ssl_check_hostname"] is True
    assert "ssl_certfile" not in client  # empty means unset


def test_plaintext_by_default_without_tls_options():
    client = EdgeConfig.load(None, {}).kafka.client_config()
    assert client["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("ssl_", "sasl_")) for k in client)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[kafka]\ngroupid = 'x'\n", {}, "unknown key kafka.groupid"),
        ("[kakfa]\n", {}, "unknown section"),
        ("[processing]\nbatch_size = 'many'\n", {}, "processing.batch_size"),
        ("", {"MEMAE_TS_HTTP_PORT": "eighty"}, "MEMAE_TS_HTTP_PORT"),
        ("", {"MEMAE_TS_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "SSL_CHECK_HOSTNAME"),
        ("[kafka]\nauto_offset_reset = 'middle'\n", {}, "auto_offset_reset"),
        ("[processing]\nbatch_size = 0\n", {}, "batch_size"),
        ("[kafka\n", {}, "edge.toml"),
        ("[kafka]\nlinger_ms = 5000\n", {}, "kafka.linger_ms must be between 0 and 1000"),
        ("[kafka]\nlinger_ms = -1\n", {}, "kafka.linger_ms"),
        ("[kafka]\ncommit_interval_ms = -5\n", {}, "kafka.commit_interval_ms must be between 0 and 60000"),
        ("[kafka]\ncommit_interval_ms = 3600000\n", {}, "kafka.commit_interval_ms"),
        ("[kafka]\nfetch_wait_max_ms = -1\n", {}, "kafka.fetch_wait_max_ms"),
        ("[kafka]\nfetch_min_bytes = 0\n", {}, "kafka.fetch_min_bytes must be between 1"),
        ("", {"MEMAE_TS_KAFKA_COMMIT_INTERVAL_MS": "soon"}, "COMMIT_INTERVAL_MS"),
        ("[processing]\nhop = 0\n", {}, "processing.hop must be a whole number"),
        ("[processing]\nhop = 2.5\n", {}, "processing.hop"),
        ("[processing]\ndelivery = 'exactly-twice'\n", {}, "processing.delivery"),
        ("[processing]\ndelivery = 'exactly-once'\n[source]\nkind = 'mqtt'\n", {}, "Kafka source and Kafka"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, text, env, message):
    with pytest.raises(ConfigError, match=message):
        EdgeConfig.load(write(tmp_path, text), env)


def test_the_shipped_example_config_loads_with_its_password_from_a_systemd_credential(tmp_path):
    (tmp_path / "kafka-password").write_text("s3cret\n")  # what LoadCredential= provides
    cfg = EdgeConfig.load(EXAMPLE, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.kafka.security_protocol == "SASL_SSL"
    assert cfg.kafka.client_config()["sasl_plain_password"] == "s3cret"
    assert cfg.kafka.partition_assignment == "cooperative-sticky"
    assert cfg.http.port == 9108
    assert cfg.http.host == "127.0.0.1"  # never every interface by default
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        EdgeConfig.load(EXAMPLE, {})


def test_secrets_come_from_files_never_required_in_the_toml(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    text = f'[kafka]\nsasl_plain_password_file = "{secret}"\n'
    assert EdgeConfig.load(write(tmp_path, text), {}).kafka.sasl_plain_password == "from-file"
    env = {"MEMAE_TS_KAFKA_SSL_PASSWORD_FILE": str(secret)}
    assert EdgeConfig.load(None, env).kafka.ssl_password == "from-file"
    inline = EdgeConfig.load(None, {"MEMAE_TS_KAFKA_SASL_PLAIN_PASSWORD": "env"})
    assert inline.kafka.sasl_plain_password == "env"
    with pytest.raises(ConfigError, match="both set"):
        EdgeConfig.load(write(tmp_path, text + 'sasl_plain_password = "inline"\n'), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        EdgeConfig.load(None, {"MEMAE_TS_KAFKA_SASL_PLAIN_PASSWORD_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="cannot read"):
        EdgeConfig.load(None, {"MEMAE_TS_KAFKA_SASL_PLAIN_PASSWORD_FILE": str(tmp_path / "missing")})
    client = EdgeConfig.load(write(tmp_path, text), {}).kafka.client_config()
    assert not any(k.endswith("_file") for k in client)  # the file names are ours, not Kafka's


def test_group_membership_settings_are_checked(tmp_path):
    cfg = EdgeConfig.load(None, {"MEMAE_TS_KAFKA_GROUP_INSTANCE_ID": "gateway-3.plant"})
    assert cfg.kafka.group_instance_id == "gateway-3.plant"
    with pytest.raises(ConfigError, match="group_instance_id"):
        EdgeConfig.load(None, {"MEMAE_TS_KAFKA_GROUP_INSTANCE_ID": "gateway 3"})
    with pytest.raises(ConfigError, match="partition_assignment"):
        EdgeConfig.load(write(tmp_path, '[kafka]\npartition_assignment = "sticky-ish"\n'), {})
    assets = EdgeConfig.load(None, {"MEMAE_TS_PROCESSING_ASSETS": "pump-*, fan-2"}).processing.assets
    assert assets == ["pump-*", "fan-2"]


def test_the_producer_gets_the_same_security_settings_in_librdkafka_names(tmp_path):
    from memae_ts.connectors.kafka_sink import producer_config

    cfg = EdgeConfig.load(
        write(
            tmp_path,
            '[kafka]\nbrokers = ["k1:9093", "k2:9093"]\nsecurity_protocol = "SASL_SSL"\n'
            'sasl_mechanism = "SCRAM-SHA-512"\nsasl_plain_username = "edge"\nssl_cafile = "/etc/ca.pem"\n'
            "ssl_check_hostname = false\n",
        ),
        {"MEMAE_TS_KAFKA_SASL_PLAIN_PASSWORD": "s3cret"},
    )
    producer = producer_config(cfg.kafka.client_config())
    assert producer["bootstrap.servers"] == "k1:9093,k2:9093"
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["sasl.mechanism"] == "SCRAM-SHA-512"
    assert producer["sasl.username"] == "edge"
    assert producer["sasl.password"] == "s3cret"
    assert producer["ssl.ca.location"] == "/etc/ca.pem"
    assert producer["ssl.endpoint.identification.algorithm"] == "none"
    with pytest.raises(ValueError, match="sasl_kerberos_service_name"):
        producer_config({"sasl_kerberos_service_name": "kafka"})


def test_runtime_threads_come_from_the_model_section(tmp_path):
    cfg = EdgeConfig.load(write(tmp_path, "[model]\nthreads = 2\n"), {})
    assert cfg.model.threads == 2
    with pytest.raises(ConfigError, match=r"model\.threads"):
        EdgeConfig.load(write(tmp_path, "[model]\nthreads = 0\n"), {})
