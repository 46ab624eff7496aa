"""Ways to turn a window's per-sensor reconstruction errors into one score.

**The bundle's reduction** (`ScoreReduction`, config.json "scoring", `MemAE(score_reduction=)`)
is applied inside every engine, C++ runtime, torch, numpy and ONNX alike, so calibration, `score`,
`evaluate`, the API and the edge daemon all see the same numbers:

- `mean` (the default; a bundle without "scoring"): contributions are each sensor's squared
  error averaged over the window's rows, the score their mean over sensors;
- `max`: the same contributions, the score the worst sensor's: a fault in one sensor of many
  is not diluted by the others. The top sensor is the one that sets the score;
- `last_rows`: contributions weight the rows towards the window's newest (weights halving every
  `half_life_rows` rows back, summing to 1: the window ending at t scores row t, so a fault that
  has passed stops weighing on later windows sooner), the score is their mean. Contributions
  are the weighted errors, so they still add up to the score (times the sensor count).

The threshold is calibrated on the same reduction (the estimator scores its held-out windows
with the engine that will score in production). docs/benchmarks.md ("Scoring choices: what
wins") has the measurements behind offering `max` and `last_rows`.

**Offline choices** (`Reduction`, bench/skab.py) are computed on top of the contributions in
Python, for measuring; they are not bundle settings:

- `mean`: the mean over sensors (the default; what every engine returns as the score);
- `max`: the worst sensor's error: a fault in one sensor of many is not diluted by the others;
- `mahalanobis`: the Mahalanobis distance of the contribution vector from its mean on held-out
  normal windows (Ledoit–Wolf shrunk covariance: a few dozen held-out windows do not support a
  plain covariance of 8+ sensors): sensors whose errors are large but ordinary, or that move
  together in normal operation, weigh less. Its square root is taken so it grows with the
  squared error, like `mean` and `max`, and one threshold margin means the same for all three.

`last_rows_weights` gives the row weights of `last_rows` (bench/skab.py measured it with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memae_ts.errors import DataError

REDUCTIONS = ("mean", "max", "mahalanobis")


@dataclass(frozen=True)
class Reduction:
    """A fitted reduction: `kind` and, for Mahalanobis, the held-out mean and precision."""

    kind: str
    center: np.ndarray | None = None
    precision: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, held_out: np.ndarray | None = None) -> Reduction:
        """`held_out`: contributions of held-out normal windows (needed for `mahalanobis`)."""
        if kind not in REDUCTIONS:
            raise DataError(f"unknown score reduction {kind!r}; choose one of {', '.join(REDUCTIONS)}")
        if kind != "mahalanobis":
            return cls(kind)
        if held_out is None:
            raise DataError("the mahalanobis reduction needs held-out windows' per-sensor errors")
        held = np.asarray(held_out, dtype=np.float64)
        held = held[np.isfinite(held).all(axis=1)]
        if held.shape[0] < 3:
            raise DataError(
                f"the mahalanobis reduction needs at least 3 held-out windows, got {held.shape[0]}"
            )
        center, covariance = _ledoit_wolf(held)
        return cls(kind, center, np.linalg.pinv(covariance, hermitian=True))

    def __call__(self, contributions: np.ndarray) -> np.ndarray:
        c = np.asarray(contributions, dtype=np.float64)
        if self.kind == "mean":
            return c.mean(axis=1)
        if self.kind == "max":
            return c.max(axis=1)
        assert self.center is not None and self.precision is not None
        d = c - self.center
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.center is not None and self.precision is not None:
            out["center"] = self.center.tolist()
            out["precision"] = self.precision.tolist()
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Reduction:
        kind = str(config.get("kind", "mean"))
        if kind == "mahalanobis":
            return cls(kind, np.asarray(config["center"], float), np.asarray(config["precision"], float))
        return cls.fit(kind)


def _ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit–Wolf (2004) shrunk covariance towards a scaled identity, in numpy (the
    same estimate as scikit-learn's `LedoitWolf`, which a gateway install does not have)."""
    n, p = x.shape
    center = x.mean(axis=0)
    xc = x - center
    sample = xc.T @ xc / n
    mu = float(np.trace(sample)) / p
    delta = float(np.sum((sample - mu * np.eye(p)) ** 2)) / p
    if delta <= 0:
        return center, sample + 1e-12 * np.eye(p)
    x2 = xc**2
    beta = float(np.sum(x2.T @ x2 / n - sample**2)) / (p * n)
    shrinkage = min(beta, delta) / delta
    covariance = (1 - shrinkage) * sample + shrinkage * mu * np.eye(p)
    return center, covariance + 1e-12 * max(mu, 1e-300) * np.eye(p)


def last_rows_weights(window: int, half_life: float) -> np.ndarray:
    """Row weights of a window, newest last, halving every `half_life` rows back; sum 1."""
    if window < 1 or not half_life > 0:
        raise DataError(f"window ({window}) and half-life ({half_life}) must be positive")
    weights = 0.5 ** ((window - 1 - np.arange(window)) / float(half_life))
    return weights / weights.sum()


BUNDLE_REDUCTIONS = ("mean", "max", "last_rows")
HALF_LIFE_RANGE = (0.01, 1e6)  # rows; the C++ loader's limits (cpp/src/model.cpp)


@dataclass(frozen=True)
class ScoreReduction:
    """The bundle's score reduction (config.json "scoring"), applied by every engine.

    `half_life_rows` only for `last_rows`: rows back from the window's last at which a row's
    weight has halved.
    """

    kind: str = "mean"
    half_life_rows: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in BUNDLE_REDUCTIONS:
            raise DataError(
                f"score_reduction must be one of {', '.join(BUNDLE_REDUCTIONS)}, got {self.kind!r}"
            )
        if self.kind == "last_rows":
            lo, hi = HALF_LIFE_RANGE
            h = self.half_life_rows
            if h is None or isinstance(h, bool) or not isinstance(h, (int, float)) or not lo <= h <= hi:
                raise DataError(f"score_half_life must be a number of rows in [{lo:g}, {hi:g}], got {h!r}")
        elif self.half_life_rows is not None:
            raise DataError(f"score_half_life applies to score_reduction 'last_rows' only, not {self.kind!r}")

    @classmethod
    def for_window(cls, kind: str, half_life: float | None, window: int) -> ScoreReduction:
        """The estimator's parameters resolved for a window: `last_rows` without a half-life
        gets a quarter of the window (8 rows of 32, what docs/benchmarks.md measured)."""
        if kind == "last_rows" and half_life is None:
            half_life = window / 4.0
        return cls(kind, half_life)  # a half-life given with another reduction is refused, not dropped

    def to_config(self) -> dict[str, Any] | None:
        """The "scoring" section, or None for `mean` (the bundle is then written exactly as
        before the section existed: same format version, same integrity id)."""
        if self.kind == "mean":
            return None
        out: dict[str, Any] = {"reduction": self.kind}
        if self.half_life_rows is not None:
            out["half_life_rows"] = self.half_life_rows
        return out

    @classmethod
    def from_config(cls, section: Any) -> ScoreReduction:
        """From a bundle's "scoring" section (None or absent: `mean`); bundle.py has checked it."""
        if section is None:
            return cls()
        half_life = section.get("half_life_rows")
        return cls(str(section["reduction"]), None if half_life is None else float(half_life))

    def describe(self) -> str:
        """One phrase for `memae-ts info` and logs."""
        if self.kind == "last_rows":
            return f"last_rows (row weights halve every {self.half_life_rows:g} rows back from the newest)"
        if self.kind == "max":
            return "max (the worst sensor's mean squared error)"
        return "mean (mean squared error over rows and sensors)"

    def row_weights(self, window: int) -> np.ndarray | None:
        """float64 weights of the rows (sum 1) for `last_rows`, None for the plain row mean."""
        if self.kind != "last_rows":
            return None
        assert self.half_life_rows is not None
        return last_rows_weights(window, self.half_life_rows)

    def reduce(self, squared_errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (B,), contributions (B, S)) from squared errors (B, window, S), float64.

        `mean` is the exact arithmetic the engines used before reductions existed."""
        errors = np.asarray(squared_errors, dtype=np.float64)
        weights = self.row_weights(errors.shape[1])
        if weights is None:
            contributions = errors.mean(axis=1)
        else:
            contributions = np.einsum("bws,w->bs", errors, weights)
        if self.kind == "max":
            return contributions.max(axis=1), contributions
        return contributions.mean(axis=1), contributions
