"""Core fixtures: small plant CSVs and one tiny trained model shared by the whole session.

Fitting is the slow part, so tests that only need *a* trained model share this one instead of
refitting in every test (the PyOD anti-pattern).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from memae_ts.io.demo_data import generate

TINY_PARAMS = {
    "window": 16,
    "channels": (8, 16),
    "latent": 8,
    "memory_slots": 20,
    "epochs": 10,
    "patience": 5,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "seed": 3,
}


@pytest.fixture(scope="session")
def plant_csvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(normal history, live data with labelled faults), ten-minute sampling to stay small."""
    root = tmp_path_factory.mktemp("plant")
    history = root / "history.csv"
    live = root / "live.csv"
    generate(days=6, period_seconds=300, seed=1, faults=False).to_csv(history, index=False)
    generate(days=4, period_seconds=300, seed=2, faults=True).to_csv(live, index=False)
    return history, live


@pytest.fixture(scope="session")
def tiny_model_dir(plant_csvs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE

    model = MemAE(**TINY_PARAMS).fit(plant_csvs[0])
    out = tmp_path_factory.mktemp("model") / "tiny"
    model.save(out)
    return out


@pytest.fixture(scope="session")
def tiny_mlp_model_dir(plant_csvs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained MLP MemAE (the conv one is the shared `tiny_model_dir`)."""
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE

    model = MemAE(
        arch="mlp", window=16, hidden=(32, 16), latent=8, memory_slots=20, epochs=3, patience=3, seed=5
    )
    out = tmp_path_factory.mktemp("mlp-model") / "tiny-mlp"
    model.fit(plant_csvs[0]).save(out)
    return out
