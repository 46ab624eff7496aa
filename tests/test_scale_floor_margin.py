"""The two defaults learned on SKAB: a relative scale floor and a threshold margin."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from memae_ts.detection.threshold import calibrate, with_margin
from memae_ts.errors import DataError
from memae_ts.io.data import DataWarning
from memae_ts.training.scaling import Scaler


def test_floor_lifts_only_sensors_quiet_relative_to_their_level() -> None:
    rng = np.random.default_rng(0)
    # A thermocouple at ~26 °C moving by 0.01 °C, and a voltage at ~230 V moving by 10 V.
    values = np.c_[26 + 0.01 * rng.standard_normal(400), 230 + 10 * rng.standard_normal(400)]
    plain = Scaler.fit(values, "standard", ["tc", "v"])
    floored = Scaler.fit(values, "standard", ["tc", "v"], min_relative_scale=0.01)
    assert plain.scale[0] == pytest.approx(0.01, rel=0.2)
    assert floored.scale[0] == pytest.approx(0.26, rel=0.01)  # 1 % of the level
    assert floored.scale[1] == plain.scale[1]  # already wider than 1 % of 230 V
    np.testing.assert_array_equal(floored.center, plain.center)
    # A 0.5 °C drift is 50 σ without the floor and about 2 with it.
    drift = np.array([[26.5, 230.0]])
    assert plain.transform(drift)[0, 0] > 30
    assert floored.transform(drift)[0, 0] < 3


def test_floor_keeps_the_constant_sensor_rules() -> None:
    values = np.c_[np.zeros(50), np.full(50, 300.0), np.arange(50.0)]
    with pytest.warns(DataWarning, match="constant"):
        scaler = Scaler.fit(values, "robust", ["zero", "level", "ramp"], min_relative_scale=0.01)
    assert scaler.scale[0] == 1.0  # constant at 0: unit scale, as without the floor
    assert scaler.scale[1] == pytest.approx(3.0)  # constant at 300: 1 % of the level
    with pytest.raises(DataError, match="min_relative_scale"):
        Scaler.fit(values[:, 2:], "standard", ["ramp"], min_relative_scale=-0.1)


def test_margin_multiplies_and_records_the_calibrated_value() -> None:
    base = calibrate(np.linspace(0.0, 1.0, 201), "quantile", 0.995)
    wide = with_margin(base, 1.5)
    assert wide.value == pytest.approx(1.5 * base.value)
    assert wide.details["calibrated_value"] == base.value and wide.details["margin"] == 1.5
    assert wide.to_config()["method"] == "quantile"
    assert with_margin(base, 1.0) is base
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(DataError, match="margin"):
            with_margin(base, bad)


def test_estimator_applies_both_defaults() -> None:
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE

    rng = np.random.default_rng(1)
    t = np.arange(300)
    frame = pd.DataFrame(
        {"temp": 80 + 0.02 * rng.standard_normal(300), "flow": np.sin(t / 5) + 0.1 * rng.standard_normal(300)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        model = MemAE(window=8, epochs=2, seed=0).fit(frame)
    assert model.min_relative_scale == 0.01 and model.threshold_margin == 1.5
    assert model.scaler_.scale[0] == pytest.approx(0.8, rel=0.01)  # 1 % of 80
    config = model.bundle_.config["threshold"]
    assert model.threshold_ == pytest.approx(1.5 * config["calibrated_value"])
    assert model.bundle_.config["training"]["params"]["threshold_margin"] == 1.5
