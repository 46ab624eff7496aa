"""pytest fixtures for the edge daemon tests: a small real model bundle, a faulty plant CSV,
its offline scores from ``memae-ts score``, and daemons that are always stopped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from edge_process import EdgeProcess
from fixtures_kafka import KafkaNames
from kafka_service import REPO


def _cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", *args], cwd=REPO, check=True, capture_output=True
    )


@dataclass(frozen=True)
class EdgeData:
    model: Path
    csv: Path  # one day of demo plant data with labelled faults
    offline: pd.DataFrame  # `memae-ts score` of csv (with label)


@pytest.fixture(scope="session")
def edge_data(tmp_path_factory: pytest.TempPathFactory) -> EdgeData:
    """A small model fitted on fault-free data (seconds, not minutes) and a faulty day."""
    root = tmp_path_factory.mktemp("edge-data")
    normal, faulty, model, scores = (root / n for n in ("normal.csv", "faulty.csv", "model", "s.csv"))
    _cli("demo-data", str(normal), "--days", "2", "--seed", "11", "--no-faults")
    _cli(
        "fit", str(normal), "-o", str(model), "--window", "16", "--channels", "8", "16",
        "--latent", "16", "--memory-slots", "32", "--epochs", "4", "--seed", "0", "-q",
        "--max-gap", "180",
    )  # fmt: skip
    _cli("demo-data", str(faulty), "--days", "0.5", "--seed", "5")
    _cli("score", str(model), str(faulty), "-o", str(scores), "--label-column", "anomaly")
    return EdgeData(model, faulty, pd.read_csv(scores))


@pytest.fixture
def edge_daemons(
    tmp_path: Path, kafka_broker: object, kafka_names: KafkaNames, edge_data: EdgeData
) -> Iterator[Callable[..., EdgeProcess]]:
    """Factory of daemons on this test's topics; all are stopped (or killed) at teardown."""
    started: list[EdgeProcess] = []

    def make(name: str = "edge", **kwargs: object) -> EdgeProcess:
        options: dict = {
            "bootstrap": kafka_broker.bootstrap,  # type: ignore[attr-defined]
            "input_topic": kafka_names.input,
            "output_topic": kafka_names.output,
            "dead_letter_topic": kafka_names.dead_letter,
            "group": kafka_names.group,
            "model": edge_data.model,
            "client_id": name,
        }
        options.update(kwargs)
        proc = EdgeProcess(tmp_path / name, **options)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


@pytest.fixture
def replays() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``replay_in_background`` (test_edge_kafka.py) whose processes cannot outlive the test: one
    still running at the end (the test failed before joining it) is killed and waited for here.
    Without this a failed Kafka test left a Popen behind, reported as a ResourceWarning (an
    error) inside whichever later test the garbage collector happened to run in."""
    from test_edge_kafka import replay_in_background

    started: list[subprocess.Popen[bytes]] = []

    def start(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = replay_in_background(*args, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
