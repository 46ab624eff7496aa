"""Bundle round trip and refusal of every kind of broken bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_bundles import restamp

from memae_ts.engines.bundle import load_bundle
from memae_ts.errors import BundleError, DataError


@pytest.fixture
def bundle_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, target)
    return target


def _edit_config(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    restamp(path)  # an edit on purpose: reach the check under test, not the integrity id


def test_round_trip_scores_bit_identical(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    from fixtures_core import TINY_PARAMS

    from memae_ts.estimator import MemAE, load

    model = MemAE(**TINY_PARAMS).fit(plant_csvs[0])
    before = model.score_samples(plant_csvs[1])
    model.save(tmp_path / "m")
    after = load(tmp_path / "m", engine="torch").score_samples(plant_csvs[1])
    np.testing.assert_array_equal(before, after)
    # Same seed, same data: the same model (reproducibility) — and the saved fixture agrees.
    fixture_scores = load(tiny_model_dir, engine="torch").score_samples(plant_csvs[1])
    np.testing.assert_array_equal(before, fixture_scores)
    config = load_bundle(tmp_path / "m").config
    assert config["sensors"][0] == "motor_speed_rpm"
    assert len(config["training"]["data_fingerprint"]) == 64


def test_numpy_engine_agrees_with_torch(tiny_model_dir: Path, plant_csvs: tuple[Path, Path]) -> None:
    from memae_ts.estimator import load

    torch_scores = load(tiny_model_dir, engine="torch").score_samples(plant_csvs[1])
    numpy_scores = load(tiny_model_dir, engine="numpy").score_samples(plant_csvs[1])
    np.testing.assert_allclose(numpy_scores, torch_scores, rtol=1e-4)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: _edit_config(p, lambda c: c.update(format_version=99)), "newer than this memae-ts"),
        (lambda p: _edit_config(p, lambda c: c.update(format="other")), "not a memae-ts bundle"),
        (lambda p: _edit_config(p, lambda c: c["scaler"].update(scale=[1.0])), "scaler.scale"),
        (
            lambda p: _edit_config(p, lambda c: c["threshold"].update(value=float("nan"))),
            "NaN is not a valid",
        ),
        (
            lambda p: _edit_config(p, lambda c: c["threshold"].update(value=-1.0)),
            r"'value' must be a number in",
        ),
        (lambda p: _edit_config(p, lambda c: c["network"]["encoder"][0].update(weight="gone")), "'gone'"),
        (lambda p: _edit_config(p, lambda c: c["network"]["encoder"][0].update(op="conv9d")), "unknown op"),
        (lambda p: _edit_config(p, lambda c: c.update(window=c["window"] + 1)), "disagree"),
        (lambda p: _edit_config(p, lambda c: c["network"]["memory"].update(temperature=0)), "temperature"),
    ],
)
def test_broken_config_refused(bundle_copy: Path, breakage, message: str) -> None:  # type: ignore[no-untyped-def]
    breakage(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def _rewrite_weights(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))
    restamp(path)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:200]),
            "corrupt|truncated",
        ),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 3), "truncated"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\xff" * 64), "corrupt|truncated"),
        (
            lambda p: _rewrite_weights(p, lambda t: t.update({"memory.weight": t["memory.weight"] * np.nan})),
            "NaN or infinite",
        ),
        (
            lambda p: _rewrite_weights(
                p, lambda t: t.update({"encoder.0.weight": t["encoder.0.weight"][:, :2]})
            ),
            "does not fit",
        ),
        (
            lambda p: _rewrite_weights(
                p, lambda t: t.update({"memory.weight": t["memory.weight"].astype(np.float64)})
            ),
            "float32",
        ),
        (lambda p: _rewrite_weights(p, lambda t: t.pop("decoder.0.bias")), "missing"),
    ],
)
def test_broken_weights_refused(bundle_copy: Path, breakage, message: str) -> None:  # type: ignore[no-untyped-def]
    breakage(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a directory holding"):
        load_bundle(tmp_path / "file")


def test_scoring_csv_with_other_sensors_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from memae_ts.estimator import load

    path = tmp_path / "other.csv"
    path.write_text("timestamp,pressure,flow\n2026-01-01T00:00:00Z,1,2\n")
    with pytest.raises(DataError, match="missing; the model expects"):
        load(tiny_model_dir, engine="numpy").score_samples(path)
