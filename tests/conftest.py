"""Shared fixtures. The real-service fixtures live in their own modules (one job each)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

pytest_plugins = ["fixtures_core", "fixtures_kafka", "fixtures_prometheus", "fixtures_edge", "fixtures_mqtt"]


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """Every test leaves the environment and torch's thread count as it found them.

    Why: the bench scripts run in-process by the smoke tests set MEMAE_TS_THREADS (their
    `--threads`), and a later training then ran on another thread count, so the same seed gave
    other weights (test_bundle's reproducibility check failed only after the bench smokes).
    """
    environ = dict(os.environ)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
