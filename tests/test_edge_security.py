"""The daemon against a secured broker: SASL_SSL with SCRAM-SHA-512, a private CA and host name
verification, the password from a systemd credential file. A wrong password or an untrusted
certificate stops the daemon within seconds with the broker's reason (exit 2), not after a
minute of "Unable to bootstrap"."""

from __future__ import annotations

import time

import pytest
from edge_process import EdgeProcess
from memae_ts.edge.replay import read_messages
from test_edge_kafka import assert_matches_offline, offline_scores, produce, wait_count

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]


def secured_daemon(broker, names, edge_data, tmp_path, name: str, password: str, ca=None) -> EdgeProcess:  # type: ignore[no-untyped-def]
    listener = broker.secured
    creds = tmp_path / f"{name}-credentials"
    creds.mkdir()
    (creds / "kafka-password").write_text(password + "\n")  # what LoadCredential= provides
    (creds / "kafka-password").chmod(0o600)
    return EdgeProcess(
        tmp_path / name,
        bootstrap=listener.bootstrap,
        input_topic=names.input,
        output_topic=names.output,
        dead_letter_topic=names.dead_letter,
        group=names.group,
        model=edge_data.model,
        client_id=name,
        extra_env={"CREDENTIALS_DIRECTORY": str(creds)},
        config={
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "memae-ts-edge",
                "sasl_plain_password_file": "kafka-password",
                "ssl_cafile": str(ca or listener.ca_file),
                "ssl_check_hostname": True,
            }
        },
    )


def test_the_daemon_scores_through_sasl_ssl_with_a_private_ca(
    secured_kafka_broker, kafka_names, edge_data, tmp_path
):
    broker = secured_kafka_broker
    broker.create_topic(kafka_names.input, partitions=1)
    (password,) = broker.secured.users.values()
    daemon = secured_daemon(broker, kafka_names, edge_data, tmp_path, "edge", password).start()
    try:
        rows = 120
        produce(broker.bootstrap, kafka_names.input, list(read_messages(edge_data.csv))[:rows])
        offline = offline_scores(edge_data, rows)
        records = wait_count(broker.bootstrap, kafka_names.output, len(offline))
        assert_matches_offline(records, offline)
        assert password not in daemon.logs()
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("failure", ["wrong password", "untrusted CA"])
def test_bad_credentials_or_tls_fail_fast_with_the_reason(
    secured_kafka_broker, kafka_names, edge_data, tmp_path, failure
):
    broker = secured_kafka_broker
    (password,) = broker.secured.users.values()
    ca = None
    if failure == "untrusted CA":
        from kafka_service import make_ca_and_server_cert

        ca, _ = make_ca_and_server_cert(tmp_path / "other-ca")
    daemon = secured_daemon(
        broker, kafka_names, edge_data, tmp_path, "edge", "not-" + password if ca is None else password, ca
    )
    t0 = time.monotonic()
    daemon.start(wait_ready=False)
    assert daemon.proc is not None
    try:
        code = daemon.proc.wait(30)
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    assert code == 2, daemon.logs()[-3000:]
    assert time.monotonic() - t0 < 25
    event = daemon.wait_event("kafka refused the credentials or TLS setup; exiting", timeout=1)
    expected = "Authentication failed" if ca is None else "certificate verify failed"
    assert expected in event["error"], event
