"""The scale floor as a share of each sensor's training span (issue 15.4): free of the unit and
the zero point, unlike the 1 %-of-level floor, and applied the same way by every path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.errors import DataError
from memae_ts.io.data import DataWarning
from memae_ts.training.scaling import Scaler, training_span

KELVIN = 273.15


def _plant(seed: int, rows: int = 900) -> pd.DataFrame:
    """A quiet bearing temperature in °C (slow wander + 0.02 °C noise, a few NaNs and two spikes),
    a gauge pressure near 0 bar and a flow, at 10 s with an outage: the level floor treats the
    temperature and the pressure very differently although they are equally quiet."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    temp = 61.0 + 0.05 * np.sin(t / 150) + 0.02 * rng.standard_normal(rows)
    temp[[120, 610]] += 0.6  # spikes: 2 rows, inside the 1 % the span ignores
    temp[rng.choice(rows, 12, replace=False)] = np.nan
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2026-01-05") + pd.to_timedelta(10 * t, unit="s"),
            "bearing_temp": temp,
            "pressure_gauge": 0.02 + 0.004 * rng.standard_normal(rows),
            "flow": 40 + 3 * np.sin(t / 20) + 0.3 * rng.standard_normal(rows),
        }
    )
    return frame.drop(index=np.r_[400:430]).reset_index(drop=True)  # a 5-minute logger outage


def test_span_floor_scales_celsius_and_kelvin_alike_the_level_floor_does_not() -> None:
    celsius = _plant(0)[["bearing_temp", "pressure_gauge", "flow"]].to_numpy()
    kelvin = celsius + np.array([KELVIN, 0.0, 0.0])
    sensors = ["bearing_temp", "pressure_gauge", "flow"]
    for kind in ("standard", "robust"):
        span_c = Scaler.fit(celsius, kind, sensors, min_relative_scale=0.0, min_span_scale=0.5)
        span_k = Scaler.fit(kelvin, kind, sensors, min_relative_scale=0.0, min_span_scale=0.5)
        np.testing.assert_allclose(span_c.scale, span_k.scale, rtol=1e-9)
        np.testing.assert_allclose(span_c.transform(celsius), span_k.transform(kelvin), atol=1e-9)
        # The floor is what set the temperature's scale (its std is well below half its span) ...
        plain = Scaler.fit(celsius, kind, sensors)
        assert span_c.scale[0] > 1.3 * plain.scale[0]
        assert span_c.scale[0] == pytest.approx(0.5 * training_span(celsius)[0])
        # ... and the level floor gives another scale in K than in °C (1 % of 334 K vs of 61 °C).
        level_c = Scaler.fit(celsius, kind, sensors, min_relative_scale=0.01)
        level_k = Scaler.fit(kelvin, kind, sensors, min_relative_scale=0.01)
        assert level_k.scale[0] > 4 * level_c.scale[0]
        assert np.nanstd(level_c.transform(celsius)[:, 0]) > 4 * np.nanstd(level_k.transform(kelvin)[:, 0])


def test_span_ignores_spikes_and_missing_values() -> None:
    values = _plant(1)[["bearing_temp"]].to_numpy()
    clean = values.copy()
    clean[[120, 610]] -= 0.6
    # Two 0.6 °C spikes make max - min 3x the span; the 1st-99th percentile span barely moves.
    assert training_span(values)[0] == pytest.approx(training_span(clean)[0], rel=0.05)
    assert np.nanmax(values) - np.nanmin(values) > 3 * training_span(values)[0]
    assert training_span(np.full((5, 1), np.nan))[0] == 0.0  # no reading: no floor, not NaN


def test_span_floor_keeps_the_constant_sensor_rule_and_refuses_a_negative_share() -> None:
    values = np.c_[np.full(50, 300.0), np.arange(50.0)]
    with pytest.warns(DataWarning, match="constant"):
        scaler = Scaler.fit(values, "standard", ["level", "ramp"], min_relative_scale=0.0, min_span_scale=0.5)
    assert scaler.scale[0] == 1.0  # a constant sensor has no span: unit scale, as without a floor
    assert scaler.scale[1] == pytest.approx(0.5 * 48.02)  # the ramp's 1st-99th percentile span
    with pytest.raises(DataError, match="min_span_scale"):
        Scaler.fit(values[:, 1:], "standard", ["ramp"], min_span_scale=-0.1)


def test_estimator_bundle_and_engines_follow_the_span_floor(tmp_path: Path) -> None:
    """Same model from °C and K data with the span floor (scaled data identical); the parameter is
    an estimator parameter stored in the bundle, and every engine scores through the bundle's scaler."""
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE, load

    celsius = _plant(2)
    kelvin = celsius.assign(bearing_temp=celsius["bearing_temp"] + KELVIN)
    params = {"window": 8, "channels": (8, 8), "latent": 4, "memory_slots": 10, "epochs": 2, "seed": 0}
    params |= {"time_column": "timestamp", "min_relative_scale": 0.0, "min_span_scale": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        model_c = MemAE(**params).fit(celsius)
        model_k = MemAE(**params).fit(kelvin)
        level = {**params, "min_relative_scale": 0.01, "min_span_scale": 0.0}
        level_c = MemAE(**level).fit(celsius)
        level_k = MemAE(**level).fit(kelvin)
    assert model_c.get_params()["min_span_scale"] == 0.5
    assert MemAE().min_span_scale == 0.0  # the default is unchanged (docs/benchmarks.md says why)
    assert model_c.bundle_.config["training"]["params"]["min_span_scale"] == 0.5
    np.testing.assert_allclose(model_c.scaler_.scale, model_k.scaler_.scale, rtol=1e-9)
    scores_c, scores_k = model_c.score_samples(celsius), model_k.score_samples(kelvin)
    np.testing.assert_allclose(scores_c / model_c.threshold_, scores_k / model_k.threshold_, rtol=1e-3)
    # The level floor's model of the same data depends on the unit: other scales, other scores.
    assert level_k.scaler_.scale[0] > 4 * level_c.scaler_.scale[0]
    assert not np.allclose(level_c.score_samples(celsius), level_k.score_samples(kelvin), rtol=1e-2)

    model_c.save(tmp_path / "bundle")
    loaded = load(tmp_path / "bundle", engine="torch")
    assert loaded.min_span_scale == 0.5
    np.testing.assert_allclose(loaded.score_samples(celsius), scores_c, rtol=1e-5)
    for engine in ("runtime", "numpy"):
        try:
            other = load(tmp_path / "bundle", engine=engine)
        except (ImportError, RuntimeError) as exc:  # runtime not built on this machine
            pytest.skip(f"engine {engine}: {exc}")
        np.testing.assert_allclose(other.score_samples(celsius), scores_c, rtol=1e-3, atol=1e-6)


def test_streamed_fit_floors_at_the_same_span(tmp_path: Path) -> None:
    """A Parquet file fitted streamed (above --memory-limit) gets the in-memory fit's span floor."""
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE
    from memae_ts.training.streaming import fit_streaming

    path = tmp_path / "plant.parquet"
    _plant(3).to_parquet(path, row_group_size=97)
    params = {"window": 8, "channels": (8, 8), "latent": 4, "memory_slots": 10, "epochs": 1, "seed": 0}
    params |= {"time_column": "timestamp", "min_relative_scale": 0.0, "min_span_scale": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        memory = MemAE(**params).fit(path)
        streamed = fit_streaming(MemAE(**params, memory_limit="64MB"), path)
        unfloored = MemAE(**{**params, "min_span_scale": 0.0}).fit(path)
    assert streamed.bundle_.config["training"]["streaming"]["memory_limit"] == 64 * 2**20
    np.testing.assert_allclose(streamed.scaler_.scale, memory.scaler_.scale, rtol=1e-6)
    assert streamed.scaler_.scale[0] > 1.3 * unfloored.scaler_.scale[0]


def test_cli_option_reaches_the_bundle_and_a_negative_share_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    import json

    from memae_ts.cli import main

    csv = tmp_path / "plant.csv"
    _plant(4).to_csv(csv, index=False)
    common = ["fit", str(csv), "--time-column", "timestamp", "--window", "8", "--epochs", "1", "-q"]
    assert main([*common, "-o", str(tmp_path / "m"), "--min-span-scale", "0.5"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["params"]["min_span_scale"] == 0.5
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "bad"), "--min-span-scale", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "min_span_scale" in err[0]
