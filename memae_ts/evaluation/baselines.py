"""Strong, simple baselines fitted in the same harness as a MemAE bundle.

Why: a user should see on *their own* data whether the memory-augmented autoencoder earns its
place. Each baseline here reads, splits, windows and scales the training data exactly as the
model did (the bundle's data config: window, gap and fill rules, resampling grid, validation
split, labelled rows left out, the same scaler), and scores the same rows (the window ending
at row t scores row t, so warm-up rows and gaps match too).

- `pca`: PCA on the (scaled) sensor vector of the row a window ends at, with the two classic
  multivariate control charts: Hotelling's T² inside the model plane (limit from the
  F distribution) and Q, the squared prediction error off it (Jackson–Mudholkar limit). The
  score is max(T²/T²-limit, Q/Q-limit), so 1.0 is the first limit crossed. Components: the
  fewest that explain `variance` (default 90 %) of the training variance. Needs scipy.
- `iforest`: scikit-learn's IsolationForest on whole scaled windows (flattened), score
  = −`score_samples` (higher = more abnormal); threshold = the bundle's held-out quantile rule
  *without* the margin (the margin is a ratio on squared errors; an isolation score is not one).
  Needs scikit-learn (the `baselines` extra).
- `ae`: the plain autoencoder: the same MemAE with `use_memory=False`, same parameters
  otherwise, trained on the same windows. Needs torch.

Every baseline has the estimator face of `MemAE`: `fit`, `score_samples` (one per input row,
NaN in warm-up), `normalised_scores` (1.0 = alarm), `predict`, `score_rows`, `threshold_`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memae_ts.detection.scoring import RowScores, score_rows
from memae_ts.detection.threshold import calibrate
from memae_ts.engines.bundle import Bundle, data_fingerprint
from memae_ts.errors import DataError, MemaeError
from memae_ts.io.data import SensorData
from memae_ts.io.windows import default_max_gap_seconds, gather, require_windows, segment, window_ends
from memae_ts.training.scaling import Scaler

KINDS = ("pca", "iforest", "ae")
PCA_VARIANCE = 0.90  # share of training variance the PCA plane keeps
PCA_CONFIDENCE = 0.99  # confidence of the T² and Q control limits
IFOREST_TREES = 200
MAX_FIT_WINDOWS = 50_000  # IsolationForest/PCA fit on at most this many (evenly spaced)


@dataclass
class _Frame:
    """What `scoring.score_rows` needs of a bundle: window length and threshold; an empty
    config (no operating modes, no tail model: those belong to a MemAE bundle)."""

    window: int
    threshold: float
    sensors: list[str]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    """Training data read, split and scaled the way the model's fit did it."""

    data: SensorData
    values: np.ndarray  # the filled series (rows × sensors), NaN where a split is
    train_ends: np.ndarray
    val_ends: np.ndarray
    fit_rows: np.ndarray  # rows of training windows (not held out, not labelled, complete)
    scaler: Scaler
    max_gap: float | None
    max_fill: int
    notes: list[str] = field(default_factory=list)


def _template(params: dict[str, Any]) -> Any:
    from memae_ts.estimator import MemAE

    model = MemAE()
    for key, value in params.items():
        if hasattr(model, key):
            setattr(model, key, value)
    return model


def prepare_training(params: dict[str, Any], X: Any, bundle: Bundle | None = None) -> Prepared:
    """Read and split X as `MemAE(**params).fit(X)` would; with `bundle`, its scaler and gap rules.

    The bundle's scaler is reused as is (it came from the same training rows when X is the
    bundle's training data), so the baseline sees exactly the numbers the network saw."""
    from memae_ts.estimator import _validation_rows, evenly_spaced

    model = _template(params)
    notes: list[str] = []
    if bundle is not None:
        model.time_column = bundle.config.get("time_column") or model.time_column
        model.asset_column = bundle.config.get("asset_column") or model.asset_column
        data = model._read(X, sensors=bundle.sensors, label_column=model.label_column)
        expected = bundle.config.get("training", {}).get("data_fingerprint")
        if expected and data_fingerprint(data.values, data.sensors) != expected:
            notes.append(
                f"{data.source}: not the model's training data (fingerprint differs); the baseline is "
                "fitted on it anyway, with the model's scaler and rules"
            )
        if bundle.config.get("resample") is not None:
            from memae_ts.io.regular import resample_data
            from memae_ts.io.resample import ResampleSpec

            data = resample_data(data, ResampleSpec.from_config(bundle.config["resample"]))
        max_gap, max_fill = bundle.config["max_gap_seconds"], int(bundle.config["max_fill_rows"])
    else:
        data = model._read(X)
        resample = model.resample_spec()
        if resample is not None:
            from memae_ts.io.regular import resample_data

            data = resample_data(data, resample)
            max_gap, max_fill = None, 0
        else:
            max_gap = model.max_gap if model.max_gap is not None else default_max_gap_seconds(data)
            max_fill = model.max_fill
    window = int(model.window)
    segments = segment(data, max_gap_seconds=max_gap, max_fill_rows=max_fill)
    ends = window_ends(segments, window, int(model.stride))
    require_windows(data, segments, ends, window)
    ends, labelled = model._without_labelled_faults(data, ends)
    is_val = _validation_rows(data, float(model.validation_fraction))
    val_ends = ends[is_val[ends - window + 1]]
    train_ends = ends[~is_val[ends]]
    if train_ends.size == 0:
        raise DataError(f"{data.source}: too little data to train: no window before the validation split")
    if val_ends.size < 10:
        notes.append(f"{data.source}: only {val_ends.size} held-out windows; calibrated on training windows")
        val_ends = train_ends
    fit_rows = np.flatnonzero(~is_val & ~labelled & ~np.isnan(segments.values).any(axis=1))
    if bundle is not None:
        scaler = bundle.scaler
    else:
        scaler = Scaler.fit(
            segments.values[evenly_spaced(fit_rows, 2_000_000)],
            model.scaler,
            data.sensors,
            min_relative_scale=model.min_relative_scale,
            min_span_scale=getattr(model, "min_span_scale", 0.0),
        )
    return Prepared(data, segments.values, train_ends, val_ends, fit_rows, scaler, max_gap, max_fill, notes)


class Baseline:
    """Common face: fit on training data, score rows like a MemAE bundle does.

    `source` is the model bundle whose data config (and scaler) the baseline reuses; without
    one, `params` are MemAE parameters read as `MemAE(**params).fit` would."""

    kind = "base"

    def __init__(self, params: dict[str, Any] | None = None, source: Bundle | None = None, seed: int = 0):
        self.params = dict(params or {})
        self.source = source
        self.seed = seed

    def _merged_params(self) -> dict[str, Any]:
        if self.source is None:
            return dict(self.params)
        merged = {**self.source.config.get("training", {}).get("params", {}), **self.params}
        merged["time_column"] = self.source.config.get("time_column") or merged.get("time_column")
        merged["asset_column"] = self.source.config.get("asset_column") or merged.get("asset_column")
        return merged

    def fit(self, X: Any, y: Any = None) -> Baseline:
        raise NotImplementedError

    def score_rows(self, X: Any, label_column: str | None = None) -> tuple[SensorData, RowScores]:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise MemaeError(f"this {self.kind} baseline is not fitted yet; call fit() first")

    def score_samples(self, X: Any) -> np.ndarray:
        """One score per input row, in input order; higher = more abnormal; NaN in warm-up."""
        data, result = self.score_rows(X)
        out = np.full(data.n_source_rows, np.nan)
        positions = data.positions if data.positions is not None else data.row_numbers - 2
        out[positions] = result.score
        return out

    decision_function = score_samples

    def normalised_scores(self, X: Any) -> np.ndarray:
        """Scores divided by the threshold: 1.0 is the alarm level."""
        return self.score_samples(X) / self.threshold_

    def predict(self, X: Any) -> np.ndarray:
        """1 where the score reaches the threshold, else 0 (warm-up rows are 0)."""
        return (np.nan_to_num(self.normalised_scores(X), nan=0.0) >= 1.0).astype(np.int64)

    def describe(self) -> str:
        raise NotImplementedError


class _EngineBound(Baseline):
    """A baseline that is its own scoring engine: `score(raw windows) -> (scores, contributions)`
    and a `bundle` with the window and threshold, which is all `scoring.score_rows` reads."""

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _fit_prepared(self, prep: Prepared) -> None:
        raise NotImplementedError

    @property
    def bundle(self) -> _Frame:
        return _Frame(self.window_, float(self.threshold_), self.sensors_)

    def fit(self, X: Any, y: Any = None) -> Baseline:
        """Fit on X (path, DataFrame, SensorData) with the model's rules; `y` is ignored."""
        self.__dict__.pop("threshold_", None)
        self.params_ = self._merged_params()
        prep = prepare_training(self.params_, X, self.source)
        self.notes_ = list(prep.notes)
        self.scaler_ = prep.scaler
        self.sensors_ = list(prep.data.sensors)
        self.window_ = int(_template(self.params_).window)
        self.max_gap_, self.max_fill_ = prep.max_gap, prep.max_fill
        self.n_train_windows_ = int(prep.train_ends.size)
        self.n_val_windows_ = int(prep.val_ends.size)
        self._fit_prepared(prep)
        return self

    def fit_series(
        self,
        values: np.ndarray,
        train_ends: np.ndarray,
        val_ends: np.ndarray,
        window: int = 1,
        scaler: Scaler | None = None,
    ) -> Baseline:
        """Fit on an already prepared numeric series (rows × features) and the window ends to
        learn from and calibrate on: for tables that are features, not sensor readings
        (bench/kddcup99.py; no reading, no gaps). Without `scaler` the values are used as they are."""
        from memae_ts.io.data import array_to_sensor_data

        values = np.asarray(values, dtype=np.float64)
        n_features = values.shape[1]
        self.__dict__.pop("threshold_", None)
        self.params_ = {**self._merged_params(), "window": window}
        self.scaler_ = scaler or Scaler("standard", np.zeros(n_features), np.ones(n_features))
        self.sensors_ = [f"f{j}" for j in range(n_features)]
        self.window_ = int(window)
        self.max_gap_, self.max_fill_ = None, 0
        self.n_train_windows_, self.n_val_windows_ = int(train_ends.size), int(val_ends.size)
        self.notes_ = []
        data = array_to_sensor_data(values[:2], self.sensors_)  # a name for messages only
        rows = np.unique((train_ends[:, None] - np.arange(window)[None, :]).ravel())
        self._fit_prepared(Prepared(data, values, train_ends, val_ends, rows, self.scaler_, None, 0))
        return self

    def score_rows(self, X: Any, label_column: str | None = None) -> tuple[SensorData, RowScores]:
        """Scores aligned with the (sorted) SensorData, as `MemAE.score_rows`."""
        self._check_fitted()
        model = _template(self.params_)
        data = X if isinstance(X, SensorData) else model._read(X, self.sensors_, label_column)
        resample = self.source.config.get("resample") if self.source is not None else None
        if resample is None and model.resample is not None:
            resample = model.resample_spec().to_config()
        if resample is not None:
            from memae_ts.io.regular import resample_data
            from memae_ts.io.resample import ResampleSpec

            data = resample_data(data, ResampleSpec.from_config(resample))
        return data, score_rows(self, data, max_gap_seconds=self.max_gap_, max_fill_rows=self.max_fill_)

    def _scaled(self, windows: np.ndarray) -> np.ndarray:
        from memae_ts.engines.engine_numpy import check_windows

        windows = check_windows(windows, self.window_, len(self.sensors_))
        return (windows.astype(np.float64) - self.scaler_.center) / self.scaler_.scale


class PCABaseline(_EngineBound):
    """PCA T² + Q on the row a window ends at, with the classic control limits."""

    kind = "pca"

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        source: Bundle | None = None,
        seed: int = 0,
        *,
        variance: float = PCA_VARIANCE,
        confidence: float = PCA_CONFIDENCE,
    ) -> None:
        super().__init__(params, source, seed)
        self.variance = variance
        self.confidence = confidence

    def _fit_prepared(self, prep: Prepared) -> None:
        from scipy import stats

        from memae_ts.estimator import evenly_spaced

        if not 0 < self.variance <= 1 or not 0 < self.confidence < 1:
            raise DataError(
                f"PCA variance must be in (0, 1] and confidence in (0, 1), got {self.variance}, "
                f"{self.confidence}"
            )
        rows = prep.scaler.transform(prep.values[evenly_spaced(prep.fit_rows, MAX_FIT_WINDOWS)])
        n, s = rows.shape
        if n < s + 2:
            raise DataError(
                f"{prep.data.source}: {n} complete training rows are too few for PCA on {s} sensors"
            )
        self.mean_ = rows.mean(axis=0)
        cov = np.cov(rows - self.mean_, rowvar=False).reshape(s, s)
        eigenvalues, vectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        vectors = vectors[:, order]
        total = float(eigenvalues.sum()) or 1.0
        k = int(np.searchsorted(np.cumsum(eigenvalues) / total, self.variance - 1e-12) + 1)
        k = max(1, min(k, s - 1)) if s > 1 else 1
        self.n_components_ = k
        self.explained_variance_ = eigenvalues[:k]
        self.components_ = vectors[:, :k]
        floor = 1e-12 * max(float(eigenvalues[0]), 1e-12)
        self._inverse_variance = 1.0 / np.maximum(self.explained_variance_, floor)
        alpha = 1.0 - self.confidence
        # Hotelling T² for new observations, mean and covariance estimated from n rows.
        self.t2_limit_ = float(k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(self.confidence, k, n - k))
        # Jackson–Mudholkar (1979) limit of Q (SPE) from the residual eigenvalues.
        residual = eigenvalues[k:]
        theta1, theta2, theta3 = (float(np.sum(residual**i)) for i in (1, 2, 3))
        if theta1 <= floor or theta2 <= 0:
            self.q_limit_ = floor
        else:
            h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
            c_alpha = float(stats.norm.ppf(1.0 - alpha))
            if abs(h0) < 1e-6:  # the formula's limit h0 -> 0 is not usable; fall back to a chi-square
                g, h = theta2 / theta1, theta1**2 / theta2
                self.q_limit_ = float(g * stats.chi2.ppf(self.confidence, h))
            else:
                base = (
                    c_alpha * math.sqrt(2.0 * theta2 * h0**2) / theta1
                    + 1.0
                    + theta2 * h0 * (h0 - 1.0) / theta1**2
                )
                self.q_limit_ = float(theta1 * max(base, 0.0) ** (1.0 / h0))
        self.q_limit_ = max(self.q_limit_, floor)
        self.threshold_ = 1.0

    def statistics(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T², Q and the per-sensor squared residuals of the last row of each window."""
        rows = self._scaled(windows)[:, -1, :] - self.mean_
        t = rows @ self.components_
        t2 = (t**2 * self._inverse_variance).sum(axis=1)
        residual = rows - t @ self.components_.T
        return t2, (residual**2).sum(axis=1), residual**2

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """max(T²/limit, Q/limit); contributions are the per-sensor shares of Q."""
        t2, q, parts = self.statistics(windows)
        return np.maximum(t2 / self.t2_limit_, q / self.q_limit_), parts

    def describe(self) -> str:
        return (
            f"PCA T²+Q: {self.n_components_} of {len(self.sensors_)} components ({100 * self.variance:.0f} % "
            f"of the training variance), limits at {100 * self.confidence:g} % confidence "
            f"(T² {self.t2_limit_:.3g} from the F distribution, Q {self.q_limit_:.3g} Jackson–Mudholkar); "
            f"score = max(T²/limit, Q/limit)"
        )


class IForestBaseline(_EngineBound):
    """scikit-learn IsolationForest on flattened scaled windows."""

    kind = "iforest"

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        source: Bundle | None = None,
        seed: int = 0,
        *,
        n_estimators: int = IFOREST_TREES,
    ) -> None:
        super().__init__(params, source, seed)
        self.n_estimators = n_estimators

    def _fit_prepared(self, prep: Prepared) -> None:
        try:
            from sklearn.ensemble import IsolationForest
        except ImportError as exc:
            raise MemaeError(
                "the iforest baseline needs scikit-learn: pip install 'memae-ts[baselines]'"
            ) from exc
        from memae_ts.estimator import evenly_spaced

        ends = evenly_spaced(prep.train_ends, MAX_FIT_WINDOWS)
        train = self._flat(gather(prep.values, ends, self.window_))
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(train)
        held_out = self.score(gather(prep.values, prep.val_ends, self.window_))[0]
        model = _template(self.params_)
        calibrated = calibrate(held_out, model.threshold, model.threshold_quantile, model.pot_risk)
        self.calibration_ = calibrated.to_config()
        self.threshold_ = calibrated.value

    def _flat(self, windows: np.ndarray) -> np.ndarray:
        scaled = self._scaled(windows)
        return scaled.reshape(scaled.shape[0], -1)

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """−score_samples (higher = more abnormal); contributions: each sensor's mean squared
        deviation from the training centre over the window (the forest has no per-sensor share)."""
        scaled = self._scaled(windows)
        scores = -self.forest_.score_samples(scaled.reshape(scaled.shape[0], -1))
        return scores, (scaled**2).mean(axis=1)

    def describe(self) -> str:
        return (
            f"IsolationForest: {self.n_estimators} trees on {self.n_train_windows_} windows of "
            f"{self.window_} rows (flattened, scaled); threshold = held-out {self.calibration_['method']} "
            f"rule without margin ({self.threshold_:.4g})"
        )


class AEBaseline(Baseline):
    """The plain autoencoder: the same MemAE with the memory switched off."""

    kind = "ae"

    def fit(self, X: Any, y: Any = None) -> Baseline:
        from memae_ts.estimator import MemAE

        template = MemAE()
        params = {k: v for k, v in self._merged_params().items() if hasattr(template, k)}
        params["use_memory"] = False
        self.params_ = params
        self.model_ = MemAE(**params).fit(X)
        self.notes_ = []
        if self.source is not None:
            expected = self.source.config.get("training", {}).get("data_fingerprint")
            got = self.model_.bundle_.config.get("training", {}).get("data_fingerprint")
            if expected and got != expected:
                self.notes_.append("not the model's training data (fingerprint differs)")
        self.threshold_ = float(self.model_.threshold_)
        self.sensors_ = list(self.model_.sensors_)
        return self

    def score_rows(self, X: Any, label_column: str | None = None) -> tuple[SensorData, RowScores]:
        self._check_fitted()
        return self.model_.score_rows(X, label_column=label_column)

    def describe(self) -> str:
        training = self.model_.bundle_.config.get("training", {})
        epochs = training.get("epochs_run", training.get("epochs", "?"))
        return (
            f"plain AE (MemAE with use_memory=False, the model's other parameters): {epochs} epochs, "
            f"threshold {self.threshold_:.4g} (the model's rule)"
        )


def make_baseline(
    kind: str, params: dict[str, Any] | None = None, source: Bundle | None = None, seed: int | None = None
) -> Baseline:
    """A baseline of `kind` (pca, iforest, ae) with the MemAE `params`, or reusing the data
    rules and scaler of the model bundle `source` (its seed too unless `seed` is given)."""
    if seed is None:
        known = (source.config.get("training", {}).get("params", {}) if source is not None else {}) | (
            params or {}
        )
        seed = int(known.get("seed", 0))
    if kind == "pca":
        return PCABaseline(params, source, seed)
    if kind == "iforest":
        return IForestBaseline(params, source, seed)
    if kind == "ae":
        return AEBaseline(params, source, seed)
    raise DataError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")


def training_source(bundle: Bundle) -> str | None:
    """The file name the bundle was trained on (for messages), if it recorded one."""
    name = bundle.config.get("training", {}).get("data_source")
    return os.path.basename(str(name)) if name else None
