"""The Python API (scikit-learn/PyOD style), detection on the demo plant, and the torch-free path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.errors import MemaeError
from memae_ts.io.data import DataWarning


def test_unfitted_model_refuses_to_score(plant_csvs: tuple[Path, Path]) -> None:
    from memae_ts import MemAE

    with pytest.raises(MemaeError, match="not fitted"):
        MemAE().predict(plant_csvs[1])


def test_init_only_stores_params() -> None:
    from memae_ts import MemAE

    model = MemAE(window=-5, arch="nonsense")  # validation happens in fit, not here
    assert model.get_params()["window"] == -5


def test_api_on_dataframe_in_input_order(tiny_model_dir: Path, plant_csvs: tuple[Path, Path]) -> None:
    from memae_ts import load

    model = load(tiny_model_dir, engine="numpy")
    frame = pd.read_csv(plant_csvs[1])
    scores = model.score_samples(frame)
    shuffled = frame.sample(frac=1.0, random_state=0)
    with pytest.warns(DataWarning, match="not in time order"):
        shuffled_scores = model.score_samples(shuffled)
    # Rows are sorted by time internally, but results come back in the caller's order.
    np.testing.assert_allclose(shuffled_scores, scores[shuffled.index.to_numpy()], rtol=1e-12, equal_nan=True)
    labels = model.predict(frame)
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (np.nan_to_num(scores) >= model.threshold_).astype(int))
    np.testing.assert_allclose(model.normalised_scores(frame), scores / model.threshold_)


def test_faults_score_far_above_normal(tiny_model_dir: Path, plant_csvs: tuple[Path, Path]) -> None:
    from memae_ts import load

    model = load(tiny_model_dir, engine="numpy")
    frame = pd.read_csv(plant_csvs[1])
    scores = model.score_samples(frame)
    labels = frame["anomaly"].to_numpy()
    scored = ~np.isnan(scores)
    assert np.median(scores[scored & (labels == 1)]) > 1.5 * np.median(scores[scored & (labels == 0)])
    from memae_ts.evaluation.metrics import evaluate

    assert evaluate(labels, scores, model.threshold_)["roc_auc"] > 0.7
    # On normal rows the false-alarm rate stays low (threshold from held-out normal data).
    assert model.predict(frame)[labels == 0].mean() < 0.15


@pytest.mark.parametrize(
    "variant",
    [
        {"use_memory": False},
        {"shrink_threshold": 0.0},
        {"arch": "mlp"},
        {"addressing": "dot", "temperature": 1.0},
        {"threshold": "pot"},
    ],
)
def test_ablation_variants_train(variant: dict[str, object], plant_csvs: tuple[Path, Path]) -> None:
    from fixtures_core import TINY_PARAMS

    from memae_ts import MemAE

    model = MemAE(**{**TINY_PARAMS, "epochs": 1, **variant}).fit(plant_csvs[0])
    memory = model.bundle_.config["network"]["memory"]
    if variant.get("use_memory") is False:
        assert memory is None
    elif "shrink_threshold" in variant:
        assert memory["shrink_threshold"] == 0.0
    assert np.isfinite(model.threshold_) and model.threshold_ > 0


def test_multi_asset_file(tmp_path: Path) -> None:
    from fixtures_core import TINY_PARAMS

    from memae_ts import MemAE
    from memae_ts.io.demo_data import generate

    parts = []
    for i, asset in enumerate(["pump-1", "pump-2"]):
        part = generate(days=3, period_seconds=600, seed=10 + i, faults=False)
        part.insert(1, "machine", asset)
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    model = MemAE(**{**TINY_PARAMS, "epochs": 1, "asset_column": "machine"}).fit(frame)
    assert "machine" not in model.sensors_
    scores = model.score_samples(frame)
    # Each asset has its own warm-up: windows never span the two machines.
    per_asset_unscored = pd.Series(np.isnan(scores)).groupby(frame["machine"]).sum()
    assert per_asset_unscored.tolist() == [TINY_PARAMS["window"] - 1] * 2


def test_scoring_works_without_torch(tiny_model_dir: Path, plant_csvs: tuple[Path, Path]) -> None:
    """A gateway has no torch: import, load and score must not touch it; fit must say how to get it."""
    code = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import memae_ts
from memae_ts import load
model = load({str(tiny_model_dir)!r})
scores = model.score_samples({str(plant_csvs[1])!r})
assert (scores[~(scores != scores)] > 0).all()
print("engine", model.engine_.name)
try:
    memae_ts.MemAE(epochs=1).fit({str(plant_csvs[0])!r})
except memae_ts.MissingDependencyError as exc:
    print("fit:", exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert "engine torch" not in result.stdout
    assert "pip install 'memae-ts[train]'" in result.stdout
