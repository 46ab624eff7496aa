"""pytest fixtures for the real Prometheus server and promtool (Debian package)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_service import PrometheusServer, missing_reason, promtool


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    return promtool()


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
