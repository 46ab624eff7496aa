"""Turning scores on held-out normal data into an alarm threshold.

Two rules: a high quantile (simple, and its false-alarm rate on normal data is 1 − q by
construction) and Peaks-Over-Threshold (Siffer et al., KDD 2017), which fits a generalised
Pareto tail to the largest scores and extrapolates to a risk level beyond what the held-out data
can show; useful when the validation set is short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memae_ts.errors import DataError

METHODS = ("quantile", "pot")
POT_INITIAL_QUANTILE = 0.98
POT_MIN_EXCESSES = 10


@dataclass(frozen=True)
class Threshold:
    method: str
    value: float
    details: dict[str, Any]

    def to_config(self) -> dict[str, Any]:
        return {"method": self.method, "value": self.value, **self.details}


def calibrate(
    scores: np.ndarray, method: str = "quantile", quantile: float = 0.995, risk: float = 1e-3
) -> Threshold:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise DataError("no held-out windows to calibrate the threshold on; use more training data")
    if method not in METHODS:
        raise DataError(f"unknown threshold method {method!r}; choose one of {METHODS}")
    if not 0 < quantile < 1:
        raise DataError(f"threshold quantile must be in (0, 1), got {quantile}")
    floor = float(np.finfo(np.float32).tiny) * 1e6  # keep the threshold strictly positive
    if method == "quantile":
        value = max(float(np.quantile(scores, quantile)), floor)
        return Threshold("quantile", value, {"quantile": quantile, "n_scores": int(scores.size)})
    return _pot(scores, risk, floor)


def _pot(scores: np.ndarray, risk: float, floor: float) -> Threshold:
    if not 0 < risk < 1:
        raise DataError(f"POT risk must be in (0, 1), got {risk}")
    initial = float(np.quantile(scores, POT_INITIAL_QUANTILE))
    excesses = scores[scores > initial] - initial
    n, n_t = scores.size, excesses.size
    details: dict[str, Any] = {"risk": risk, "initial_quantile": POT_INITIAL_QUANTILE, "n_scores": int(n)}
    if n_t < POT_MIN_EXCESSES:
        # Too few peaks to fit a tail: fall back to the empirical quantile at 1 - risk.
        value = max(float(np.quantile(scores, 1 - risk)), floor)
        return Threshold("pot", value, {**details, "fallback": "quantile"})
    from scipy.stats import genpareto

    shape, _, scale = genpareto.fit(excesses, floc=0.0)
    ratio = risk * n / n_t
    if abs(shape) < 1e-9:
        value = initial - scale * math.log(ratio)
    else:
        value = initial + (scale / shape) * (ratio ** (-shape) - 1.0)
    if not math.isfinite(value) or value < initial:
        value = float(np.quantile(scores, 1 - risk))
    return Threshold(
        "pot", max(float(value), floor), {**details, "gpd_shape": float(shape), "gpd_scale": float(scale)}
    )


def with_margin(threshold: Threshold, margin: float) -> Threshold:
    """The calibrated threshold times `margin` (>= 1), recorded in the details.

    Why: the held-out windows of a short training file are few and come from the same minutes as
    the training data, so their top score understates what later normal operation reaches
    (drift, other operating points). A margin over the held-out maximum is the usual remedy
    (SKAB's Conv-AE uses 4/3 over the training maximum).
    """
    if not margin >= 1.0 or not math.isfinite(margin):
        raise DataError(f"threshold margin must be a finite number >= 1, got {margin}")
    if margin == 1.0:
        return threshold
    return Threshold(
        threshold.method,
        threshold.value * margin,
        {**threshold.details, "margin": margin, "calibrated_value": threshold.value},
    )
