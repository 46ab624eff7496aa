"""pytest fixtures for the real Kafka broker: one KRaft broker per session, own topics per test."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kafka_service import KafkaBroker, missing_reason


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class KafkaNames:
    """Topic and group names unique to one test, so tests never see each other's data."""

    input: str
    output: str
    dead_letter: str
    group: str


@pytest.fixture
def kafka_names(request: pytest.FixtureRequest) -> KafkaNames:
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    tag = f"{base}-{uuid.uuid4().hex[:6]}"
    return KafkaNames(f"{tag}.in", f"{tag}.scores", f"{tag}.dlq", f"{tag}-group")


@pytest.fixture(scope="session")
def secured_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker with a SASL_SSL listener (SCRAM-SHA-512, certificate from a private CA for
    ``localhost``) beside its PLAINTEXT one; started only by the tests that need it."""
    reason = missing_reason() or (None if shutil.which("openssl") else "openssl is not installed")
    if reason is not None:
        pytest.skip(reason)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-secured"), secured=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
