"""Scaling fit on training data, and threshold calibration."""

from __future__ import annotations

import numpy as np
import pytest

from memae_ts.detection.threshold import calibrate
from memae_ts.errors import DataError
from memae_ts.io.data import DataWarning
from memae_ts.training.scaling import Scaler


def test_standard_and_robust_scaling() -> None:
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.normal(5, 2, 20000), rng.normal(-1, 0.5, 20000)])
    for kind in ("standard", "robust"):
        scaler = Scaler.fit(values, kind, ["a", "b"])
        scaled = scaler.transform(values)
        np.testing.assert_allclose(np.median(scaled, axis=0), 0, atol=0.05)
        np.testing.assert_allclose(scaled.std(axis=0), 1, atol=0.05)
        restored = Scaler.from_config(scaler.to_config())
        np.testing.assert_array_equal(restored.center, scaler.center)
        np.testing.assert_array_equal(restored.scale, scaler.scale)
    # One huge spike moves the standard scale, not the robust one.
    spiked = values.copy()
    spiked[0, 0] = 1e6
    assert Scaler.fit(spiked, "standard", ["a", "b"]).scale[0] > 1000
    assert Scaler.fit(spiked, "robust", ["a", "b"]).scale[0] == pytest.approx(2, rel=0.05)


def test_constant_column_warns_and_keeps_unit_scale() -> None:
    values = np.column_stack([np.ones(100), np.arange(100.0)])
    with pytest.warns(DataWarning, match=r"\['valve'\] are constant"):
        scaler = Scaler.fit(values, "standard", ["valve", "flow"])
    assert scaler.scale[0] == 1.0
    assert np.all(np.isfinite(scaler.transform(values)))


def test_unknown_scaler() -> None:
    with pytest.raises(DataError, match="unknown scaler"):
        Scaler.fit(np.ones((3, 1)), "minmax", ["a"])


def test_quantile_threshold() -> None:
    scores = np.arange(1, 1001, dtype=float)
    threshold = calibrate(scores, "quantile", 0.99)
    assert threshold.value == pytest.approx(np.quantile(scores, 0.99))
    assert (scores >= threshold.value).mean() == pytest.approx(0.01, abs=0.002)


def test_pot_extrapolates_exponential_tail() -> None:
    rng = np.random.default_rng(1)
    scores = rng.exponential(1.0, 20000)
    threshold = calibrate(scores, "pot", risk=1e-4)
    # True 1 - 1e-4 quantile of Exp(1) is ln(1e4) ≈ 9.21, beyond most of the sample.
    assert threshold.value == pytest.approx(np.log(1e4), rel=0.15)
    assert threshold.details["gpd_scale"] > 0


def test_threshold_errors() -> None:
    with pytest.raises(DataError, match="no held-out windows"):
        calibrate(np.array([np.nan]))
    with pytest.raises(DataError, match="unknown threshold method"):
        calibrate(np.ones(10), "magic")
    assert calibrate(np.zeros(100)).value > 0  # all-perfect reconstructions still give a usable threshold
