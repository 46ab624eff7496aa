"""`MemAE`: the scikit-learn/PyOD-style face of memae-ts.

`fit` learns from normal operation, `score_samples` returns one score per row (higher = more
abnormal, NaN during a window's warm-up), `predict` returns 0/1 with 1 = anomaly, and
`normalised_scores` divides by the threshold so that 1.0 is the alarm level.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from memae_ts import __version__
from memae_ts.detection.alarms import AlarmRule, episodes_frame
from memae_ts.detection.modes import COMBINE_RULES, MAX_MODE_WINDOWS
from memae_ts.detection.score_reduction import ScoreReduction
from memae_ts.detection.scoring import BATCH_WINDOWS, RowScores, score_rows
from memae_ts.detection.tails import TailModel
from memae_ts.detection.threshold import calibrate, with_margin
from memae_ts.engines.bundle import Bundle, data_fingerprint, load_bundle, make_bundle, save_bundle
from memae_ts.errors import DataError, MemaeError, NotFittedError, require_torch
from memae_ts.io.data import (
    DataWarning,
    ReadOptions,
    SensorData,
    array_to_sensor_data,
    asset_rows,
    frame_to_sensor_data,
    load_csv,
)
from memae_ts.io.summary import DataSummary
from memae_ts.io.windows import (
    default_max_gap_seconds,
    gap_report,
    gather,
    require_windows,
    segment,
    window_ends,
)
from memae_ts.sklearn_compat import ParamsMixin, sklearn_tags
from memae_ts.training.memory_usage import MAX_WINDOWS as MAX_USAGE_WINDOWS
from memae_ts.training.memory_usage import collapse_warning
from memae_ts.training.memory_usage import measure as measure_memory
from memae_ts.training.scaling import Scaler
from memae_ts.training.training_range import sensor_range_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from memae_ts.io.resample import ResampleSpec
    from memae_ts.training.model import MemAENet, NetworkSpec
    from memae_ts.training.train import TrainHistory, TrainSettings

log = logging.getLogger(__name__)

# Bounds that keep a fit's time and memory independent of how long the history is.
MAX_EPOCH_WINDOWS = 100_000  # an epoch is a full pass up to this many windows, else a sample
MAX_VALIDATION_WINDOWS = 20_000  # held-out windows for early stopping and the threshold
MAX_SCALER_ROWS = 2_000_000  # rows the scaler statistics are computed from (evenly spaced)

InputData = str | os.PathLike[str] | pd.DataFrame | np.ndarray | SensorData


class MemAE(ParamsMixin):
    """Memory-augmented autoencoder for multivariate sensor windows.

    Parameters are stored as given; all checking happens in `fit` (scikit-learn convention).
    The scikit-learn protocol (`get_params(deep)`, `set_params`, `clone`, `Pipeline`,
    `GridSearchCV`) and PyOD's attributes (`decision_scores_`, `labels_`, `threshold_`) and
    meaning (higher = more abnormal, labels 1 = anomaly, 0 = normal) hold; see
    `memae_ts.sklearn_compat` for why scikit-learn is optional.
    """

    def __init__(
        self,
        *,
        window: int = 32,
        stride: int = 1,
        arch: str = "conv",
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (64, 32),
        latent: int = 32,
        kernel_size: int = 5,
        activation: str = "leaky_relu",
        use_memory: bool = True,
        memory_slots: int = 200,
        addressing: str = "cosine",
        temperature: float | None = None,
        learn_temperature: bool = False,
        shrink_threshold: float | None = None,
        entropy_weight: float = 2e-4,
        epochs: int = 100,
        steps_per_epoch: int | None = None,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        patience: int = 10,
        validation_fraction: float = 0.2,
        scaler: str = "standard",
        threshold: str = "quantile",
        threshold_quantile: float = 0.995,
        pot_risk: float = 1e-3,
        threshold_margin: float = 1.5,
        score_reduction: str = "mean",
        score_half_life: float | None = None,
        alarm_k: int = 3,
        alarm_n: int = 5,
        alarm_clear: float = 0.9,
        alarm_min_windows: int = 5,
        false_alarms_per_day: float | None = None,
        false_alarms_per_1000_windows: float | None = None,
        min_relative_scale: float = 0.01,
        min_span_scale: float = 0.0,
        max_gap: float | None = None,
        max_fill: int = 3,
        time_column: str | None = None,
        asset_column: str | None = None,
        label_column: str | None = None,
        exclude: Sequence[str] = (),
        time_format: str | None = None,
        dayfirst: bool | None = None,
        tz: str | None = None,
        resample: float | str | None = None,
        resample_method: str = "hold",
        resample_limit: float | str | None = None,
        train_on_labelled: bool = False,
        seed: int = 0,
        device: str = "auto",
        verbose: bool = False,
        engine: str = "auto",
        memory_limit: int | str | None = None,
        combine: str = "reconstruction",
        follow_drift: bool = False,
        follow_below: float = 0.5,
        follow_rate: float = 0.001,
        follow_max_drift: float = 0.25,
        follow_warmup: float = 100.0,
    ) -> None:
        self.window = window
        self.stride = stride
        self.arch = arch
        self.channels = channels
        self.hidden = hidden
        self.latent = latent
        self.kernel_size = kernel_size
        self.activation = activation
        self.use_memory = use_memory
        self.memory_slots = memory_slots
        self.addressing = addressing
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.shrink_threshold = shrink_threshold
        self.entropy_weight = entropy_weight
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.scaler = scaler
        self.threshold = threshold
        self.threshold_quantile = threshold_quantile
        self.pot_risk = pot_risk
        self.threshold_margin = threshold_margin
        # How squared errors become the score, in every engine and in calibration
        # (memae_ts.detection.score_reduction): "mean", "max" (worst sensor) or "last_rows"
        # (rows weighted towards the window's newest, halving every score_half_life rows back;
        # None = a quarter of the window).
        self.score_reduction = score_reduction
        self.score_half_life = score_half_life
        # The alarm rule (memae_ts.detection.alarms): k of the last n windows at 1.0 raise an alarm, it
        # clears when fewer than k reach alarm_clear, and stays on for alarm_min_windows.
        self.alarm_k = alarm_k
        self.alarm_n = alarm_n
        self.alarm_clear = alarm_clear
        self.alarm_min_windows = alarm_min_windows
        # A false-alarm budget (episodes after the alarm rule) instead of quantile × margin.
        self.false_alarms_per_day = false_alarms_per_day
        self.false_alarms_per_1000_windows = false_alarms_per_1000_windows
        self.min_relative_scale = min_relative_scale
        # A floor as a share of each sensor's 1st-99th percentile training span (free of units and
        # zero point); 0 = off. Measured against the level floor in docs/benchmarks.md.
        self.min_span_scale = min_span_scale
        self.max_gap = max_gap
        self.max_fill = max_fill
        self.time_column = time_column
        self.asset_column = asset_column
        self.label_column = label_column
        self.exclude = exclude
        self.time_format = time_format
        self.dayfirst = dayfirst
        self.tz = tz
        self.resample = resample
        self.resample_method = resample_method
        self.resample_limit = resample_limit
        self.train_on_labelled = train_on_labelled
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.engine = engine
        self.memory_limit = memory_limit  # bytes or '8GB'; None: half of this machine's memory
        self.combine = combine  # alarm on "reconstruction" only or the "max" of it and novelty
        self.follow_drift = follow_drift  # let the memory follow slow drift while scoring
        self.follow_below = follow_below  # only windows below this alarm level update the memory
        self.follow_rate = follow_rate  # step of one update, as a fraction of the way to the encoding
        self.follow_max_drift = follow_max_drift  # bound on a slot's total drift, relative to its norm
        self.follow_warmup = follow_warmup  # windows' worth of weight a slot's baseline is learned from

    # ------------------------------------------------------------------ helpers
    def __sklearn_tags__(self) -> Any:
        return sklearn_tags(self)

    def read_options(self) -> ReadOptions:
        """How files are read: the time format and zone a model was trained with are kept in
        its bundle and apply again when it scores the next export of the same historian."""
        return ReadOptions(time_format=self.time_format, dayfirst=self.dayfirst, tz=self.tz)

    def _read(
        self, X: InputData, sensors: Sequence[str] | None = None, label_column: str | None = None
    ) -> SensorData:
        if isinstance(X, SensorData):
            if sensors is not None and X.sensors != list(sensors):
                missing = [s for s in sensors if s not in X.sensors]
                raise DataError(f"{X.source}: sensor columns differ from the model's (missing {missing})")
            return X
        if isinstance(X, np.ndarray | list) or hasattr(X, "toarray"):  # toarray: a sparse matrix, refused
            return array_to_sensor_data(X, sensors)
        if not isinstance(X, str | os.PathLike | pd.DataFrame):
            raise DataError(
                f"expected a file path, a pandas DataFrame or a 2-D numpy array, got {type(X).__name__}"
            )
        training = sensors is None
        kwargs: dict[str, Any] = {
            "time_column": self.time_column,
            "asset_column": self.asset_column,
            "sensors": sensors,
            "exclude": tuple(self.exclude) if training else (),
            "label_column": (label_column or self.label_column) if training else label_column,
            "detect_labels": training,
            "options": self.read_options(),
        }
        if isinstance(X, pd.DataFrame):
            return frame_to_sensor_data(X, **kwargs)
        return load_csv(X, **kwargs)

    def resample_spec(self) -> ResampleSpec | None:
        if self.resample is None:
            return None
        from memae_ts.io.regular import make_spec

        return make_spec(self.resample, self.resample_method, self.resample_limit)

    def _check_fitted(self) -> None:
        if not hasattr(self, "bundle_"):
            raise NotFittedError("this MemAE is not fitted yet; call fit() or memae_ts.load() first")

    # ------------------------------------------------------------------ fit
    def fit(self, X: InputData, y: Any = None) -> MemAE:
        """Learn normal behaviour from X (a file path, a DataFrame, perhaps indexed by time, a 2-D
        numpy array of equally spaced rows, or SensorData); `y` is ignored (unsupervised).

        Afterwards, as in PyOD, `decision_scores_` holds the training rows' scores (input order,
        NaN during a window's warm-up) and `labels_` their 0/1 labels against `threshold_`; a
        Parquet input streamed because it is larger than `memory_limit` is not scored again, so
        there these two are absent (and `fit_predict` refuses, naming the reason)."""
        require_torch()
        from memae_ts.training.streaming import fit_streaming, streaming_plan
        from memae_ts.training.train import IndexedWindows, distributed_from_env, train

        if not 0 < self.validation_fraction < 1:
            raise DataError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.combine not in COMBINE_RULES:
            raise DataError(f"combine must be one of {COMBINE_RULES}, got {self.combine!r}")
        self._score_reduction()  # a bad reduction fails before training, not after it

        self._alarm_rule()  # a bad rule or budget fails before training, not after it
        self._budget_given()
        plan = streaming_plan(X, self.memory_limit)  # a Parquet input larger than memory_limit
        if plan is not None and self._budget_given():
            raise DataError(
                "a false-alarm budget needs the calibration windows in sequence, which a streamed fit "
                "(Parquet larger than --memory-limit) does not keep; raise --memory-limit or drop the budget"
            )
        if plan is not None:
            return fit_streaming(self, X, plan=plan)  # type: ignore[arg-type]
        data = self._read(X)
        resample = self.resample_spec()
        if resample is not None:
            from memae_ts.io.regular import resample_data

            data = resample_data(data, resample)
            max_gap, max_fill = None, 0  # the grid is regular; a missing grid row splits the series
        else:
            max_gap = self.max_gap if self.max_gap is not None else default_max_gap_seconds(data)
            max_fill = self.max_fill
        segments = segment(data, max_gap_seconds=max_gap, max_fill_rows=max_fill)
        ends = window_ends(segments, self.window, self.stride)
        require_windows(data, segments, ends, self.window)
        data.summary.gaps = gap_report(data, segments, self.window, max_gap, max_fill)
        ends, labelled = self._without_labelled_faults(data, ends)

        is_val = _validation_rows(data, self.validation_fraction)
        starts = ends - self.window + 1
        val_ends = ends[is_val[starts]]
        train_ends = ends[~is_val[ends]]
        val_ends, calibration = self._calibration_slice(data, segments, ends, val_ends)
        if train_ends.size == 0:
            raise DataError(f"{data.source}: too little data to train: no window before the validation split")
        if val_ends.size < 10:
            warnings.warn(
                f"{data.source}: only {val_ends.size} held-out windows; the threshold is calibrated on "
                "training windows instead, which tends to set it too low. Provide more data.",
                DataWarning,
                stacklevel=2,
            )
            val_ends = train_ends
        val_ends = evenly_spaced(val_ends, MAX_VALIDATION_WINDOWS)

        fit_rows = np.flatnonzero(~is_val & ~labelled & ~np.isnan(segments.values).any(axis=1))
        scaler = Scaler.fit(
            segments.values[evenly_spaced(fit_rows, MAX_SCALER_ROWS)],
            self.scaler,
            data.sensors,
            min_relative_scale=self.min_relative_scale,
            min_span_scale=self.min_span_scale,
        )
        # The edge daemon's drift metric: the range of the rows learned from (as a streamed fit).
        sensor_range = sensor_range_config(segments.values[fit_rows])
        del fit_rows
        series = scaler.transform_float32(segments.values)
        spec, net = self._network(len(data.sensors))
        dist = distributed_from_env(self.device)
        batches = IndexedWindows(
            series,
            train_ends,
            self.window,
            self.batch_size,
            windows_per_epoch=self._windows_per_epoch(),
            seed=self.seed,
            rank=dist.rank,
            world=dist.world,
        )
        history = train(net, batches, gather(series, val_ends, self.window), self._train_settings(), dist)
        del series, batches

        config = self._bundle_config(
            data.summary,
            scaler,
            net,
            spec,
            history,
            max_gap=max_gap,
            max_fill=max_fill,
            training={
                "data_source": os.path.basename(data.source),
                "data_fingerprint": data_fingerprint(data.values, data.sensors),
                "n_rows": len(data),
                "n_train_windows": int(train_ends.size),
                "n_val_windows": int(val_ends.size),
                "sensor_range": sensor_range,
            },
            resample=resample,
        )
        self._calibrate_and_finish(
            config,
            net,
            history,
            val_ends.size,
            lambda part: gather(segments.values, val_ends[part], self.window),
            lambda: gather(segments.values, evenly_spaced(train_ends, MAX_MODE_WINDOWS), self.window),
            calibration=calibration,
        )
        self._set_training_scores(data)
        return self

    def _set_training_scores(self, data: SensorData) -> None:
        """PyOD's `decision_scores_` and `labels_`: the training data scored by the fitted model,
        in the caller's row order."""
        config = self.bundle_.config
        scores = score_rows(
            self.engine_,
            data,
            max_gap_seconds=config["max_gap_seconds"],
            max_fill_rows=config["max_fill_rows"],
        ).score
        self.decision_scores_ = self._in_input_order(data, scores)
        self.labels_ = _labels(self.decision_scores_, self.threshold_)

    def fit_predict(self, X: InputData, y: Any = None) -> np.ndarray:
        """Fit on X and return its rows' labels (1 = anomaly): PyOD's `labels_`."""
        self.fit(X, y)
        if not hasattr(self, "labels_"):
            raise MemaeError(
                "fit_predict: the input was streamed (larger than memory_limit) and not scored again; "
                "call predict() on the parts you need"
            )
        return self.labels_

    # ------------------------------------------------------------------ fit's shared steps
    def _network(self, n_sensors: int) -> tuple[NetworkSpec, MemAENet]:
        """The network spec and a freshly seeded network (the same for every way of fitting)."""
        import torch

        from memae_ts.training.model import MemAENet, NetworkSpec, validate_spec

        spec = NetworkSpec(
            arch=self.arch,
            n_sensors=n_sensors,
            window=self.window,
            channels=[int(c) for c in self.channels],
            hidden=[int(h) for h in self.hidden],
            latent=self.latent,
            kernel_size=self.kernel_size,
            activation=self.activation,
            use_memory=self.use_memory,
            memory_slots=self.memory_slots,
            addressing=self.addressing,
            temperature=self.temperature,
            learn_temperature=self.learn_temperature,
            shrink_threshold=self.shrink_threshold,
        )
        try:
            validate_spec(spec)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        torch.manual_seed(self.seed)
        return spec, MemAENet(spec)

    def _train_settings(self) -> TrainSettings:
        from memae_ts.training.train import TrainSettings

        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            entropy_weight=self.entropy_weight,
            patience=self.patience,
            seed=self.seed,
            device=self.device,
            progress=self.verbose,
        )

    def _score_reduction(self) -> ScoreReduction:
        """The bundle's score reduction from `score_reduction` and `score_half_life`."""
        return ScoreReduction.for_window(self.score_reduction, self.score_half_life, self.window)

    def _bundle_config(
        self,
        summary: DataSummary,
        scaler: Scaler,
        net: MemAENet,
        spec: NetworkSpec,
        history: TrainHistory,
        *,
        max_gap: float | None,
        max_fill: int,
        training: dict[str, Any],
        resample: ResampleSpec | None = None,
    ) -> dict[str, Any]:
        """The bundle's config before calibration (the threshold is filled in afterwards)."""
        return {
            "library_version": __version__,
            "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sensors": list(summary.sensors),
            "time_column": summary.time["column"] if summary.time else None,
            "asset_column": summary.asset_column,
            "window": self.window,
            "stride": self.stride,
            "max_gap_seconds": max_gap,
            "max_fill_rows": max_fill,
            **({"resample": resample.to_config()} if resample is not None else {}),
            "reading": {"time_format": self.time_format, "dayfirst": self.dayfirst, "tz": self.tz},
            "data": summary.to_dict(),
            "scaler": scaler.to_config(),
            "scoring": self._score_reduction().to_config(),
            "threshold": {"method": "pending", "value": 1.0},
            "network": net.export_graph(),
            "training": {
                "network_spec": spec.to_dict(),
                "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
                **training,
                **history.to_dict(),
            },
        }

    def _calibrate_and_finish(
        self,
        config: dict[str, Any],
        net: MemAENet,
        history: TrainHistory,
        n_held_out: int,
        held_out: Callable[[slice], np.ndarray],
        training_windows: Callable[[], np.ndarray] | None = None,
        calibration: Calibration | None = None,
    ) -> MemAE:
        """Threshold from the held-out windows' scores, memory use, operating modes, then the bundle.

        `held_out(part)` gives those raw windows (readings, not scaled) a slice at a time, so
        calibration never holds all of them at once. `training_windows()` gives an evenly spaced
        sample of the training windows the modes are learned from (held-out ones when None)."""
        from memae_ts.engines.engine_torch import TorchEngine

        source = str(config["data"]["source"])
        engine = TorchEngine(make_bundle(config, net.export_tensors()), net)
        scores = np.empty(n_held_out)
        for start in range(0, n_held_out, BATCH_WINDOWS):
            part = slice(start, min(start + BATCH_WINDOWS, n_held_out))
            scores[part] = engine.score(held_out(part))[0]
        threshold = with_margin(
            calibrate(scores, self.threshold, self.threshold_quantile, self.pot_risk), self.threshold_margin
        )
        config["threshold"] = threshold.to_config()
        self._calibrate_alarms(config, engine, scores, calibration)
        if net.memory is not None:
            config["modes"] = self._fit_modes(engine, n_held_out, held_out, training_windows)
        usage = measure_memory(engine, held_out(slice(0, min(MAX_USAGE_WINDOWS, n_held_out))))
        if usage is not None:
            config["training"]["memory_usage"] = usage
            message = collapse_warning(usage)
            if message:
                warnings.warn(f"{source}: {message}", DataWarning, stacklevel=3)
        bundle = make_bundle(config, net.export_tensors())
        self._set_fitted(bundle, TorchEngine(bundle, net))
        self.history_ = history
        return self

    def _fit_modes(
        self,
        engine: Any,
        n_held_out: int,
        held_out: Callable[[slice], np.ndarray],
        training_windows: Callable[[], np.ndarray] | None,
    ) -> dict[str, Any]:
        """Operating modes from the training windows' addressing, and the novelty threshold from
        the held-out windows' novelty with the reconstruction threshold's rule and margin
        (memae_ts.detection.modes)."""
        from memae_ts.detection.modes import (
            MAX_MODE_WINDOWS,
            fit_modes,
            mode_config,
            profiles,
            window_novelty,
        )

        if training_windows is not None:
            windows, source = training_windows(), "training windows"
        else:
            windows, source = held_out(slice(0, min(MAX_MODE_WINDOWS, n_held_out))), "held-out windows"
        steps = range(0, len(windows), BATCH_WINDOWS)
        parts = [profiles(engine.analyse(windows[i : i + BATCH_WINDOWS])[2]) for i in steps]
        fit = fit_modes(np.concatenate(parts), engine.memory(), seed=self.seed)
        novelty = np.empty(n_held_out)
        for start in range(0, n_held_out, BATCH_WINDOWS):
            part = slice(start, min(start + BATCH_WINDOWS, n_held_out))
            novelty[part] = window_novelty(engine.analyse(held_out(part))[3])
        threshold = with_margin(
            calibrate(novelty, self.threshold, self.threshold_quantile, self.pot_risk), self.threshold_margin
        )
        return mode_config(
            fit,
            np.asarray(windows, dtype=np.float64),
            list(engine.bundle.sensors),
            source=source,
            novelty_threshold=threshold.to_config(),
            combine=self.combine,
        )

    def _without_labelled_faults(self, data: SensorData, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows touching a row labelled anomalous are not learned as normal (nor used to
        calibrate the threshold) unless `train_on_labelled`; the count goes into the summary."""
        labelled = np.zeros(len(data), dtype=bool)
        if data.labels is None:
            return ends, labelled
        labelled = data.labels.astype(bool)
        if not labelled.any():
            return ends, labelled
        if self.train_on_labelled:
            data.summary.training = {
                "note": f"{int(labelled.sum())} labelled row(s) trained on as normal (--train-on-labelled)",
                "excluded_windows": 0,
            }
            return ends, np.zeros(len(data), dtype=bool)
        counts = np.concatenate([[0], np.cumsum(labelled)])
        touched = counts[ends + 1] - counts[ends - self.window + 1] > 0
        kept = ends[~touched]
        note = (
            f"{int(touched.sum())} of {ends.size} windows touch the {int(labelled.sum())} row(s) labelled "
            f"anomalous in {data.label_column!r} and are left out of training and calibration "
            f"(--train-on-labelled keeps them)"
        )
        data.summary.training = {"note": note, "excluded_windows": int(touched.sum())}
        if kept.size == 0:
            raise DataError(f"{data.source}: every window touches a labelled row: {note}")
        log.debug("%s: %s", data.source, note)
        return kept, labelled

    def _windows_per_epoch(self) -> int:
        """`steps_per_epoch` batches, or by default a full pass up to MAX_EPOCH_WINDOWS windows."""
        if self.steps_per_epoch is None:
            return MAX_EPOCH_WINDOWS
        if self.steps_per_epoch < 1:
            raise DataError(f"steps_per_epoch must be positive, got {self.steps_per_epoch}")
        return self.steps_per_epoch * self.batch_size

    def _set_fitted(self, bundle: Bundle, engine: Any) -> None:
        self.bundle_ = bundle
        self.engine_ = engine
        self.sensors_ = bundle.sensors
        self.scaler_ = bundle.scaler
        self.threshold_ = bundle.threshold
        self.alarm_rule_ = AlarmRule.from_config(bundle.config.get("alarm"))
        self.tail_ = TailModel.from_config(bundle.config.get("tail"))
        self.n_features_in_ = len(bundle.sensors)
        for stale in ("decision_scores_", "labels_", "feature_names_in_"):
            self.__dict__.pop(stale, None)  # from an earlier fit: they describe other data
        data_config = bundle.config.get("data")
        from_array = isinstance(data_config, dict) and data_config.get("file_format") == "numpy array"
        if not from_array:  # scikit-learn sets it only for inputs whose columns have names
            self.feature_names_in_ = np.asarray(bundle.sensors, dtype=object)
        data = bundle.config.get("data")  # what the training data was: read, dropped, filled, left out
        self.data_summary_ = DataSummary.from_dict(data) if isinstance(data, dict) else None

    # ------------------------------------------------------------------ scoring
    def score_rows(
        self, X: InputData, label_column: str | None = None, hop: int = 1
    ) -> tuple[SensorData, RowScores]:
        """Scores aligned with the (sorted) SensorData, for the CLI and plots. ``hop`` = k scores
        every k-th window end per asset on the clock, as the edge daemon's ``hop`` (detection.hop)."""
        self._check_fitted()
        data = self._read(X, sensors=self.sensors_, label_column=label_column)
        config = self.bundle_.config
        if config.get("resample") is not None:
            from memae_ts.io.regular import resample_data
            from memae_ts.io.resample import ResampleSpec

            data = resample_data(data, ResampleSpec.from_config(config["resample"]))
        return data, score_rows(
            self.engine_,
            data,
            max_gap_seconds=config["max_gap_seconds"],
            max_fill_rows=config["max_fill_rows"],
            alarm_rule=self.alarm_rule_,
            follower=self._drift_follower(),
            hop=hop,
        )

    # ------------------------------------------------------------------ drift following
    def _drift_follower(self) -> Any:
        """With `follow_drift`, the one DriftFollower of this fitted model (memae_ts.detection.following):
        drift carries over from one scoring call to the next, like a daemon's."""
        if not self.follow_drift:
            return None
        follower = getattr(self, "follower_", None)
        if follower is None or follower.engine is not self.engine_:
            from memae_ts.detection.following import DriftFollower, FollowSettings

            settings = FollowSettings(
                self.follow_below, self.follow_rate, self.follow_max_drift, self.follow_warmup
            )
            try:
                follower = DriftFollower(self.engine_, settings)
            except ValueError as exc:
                raise DataError(f"follow_drift: {exc}") from None
            self.follower_ = follower
        return follower

    @property
    def drift_(self) -> dict[str, Any] | None:
        """Drift of the memory since training (`max`/`mean` relative slot drift) and what
        following did (`counts`); None when nothing has been scored with `follow_drift`."""
        follower = getattr(self, "follower_", None)
        if follower is None:
            return None
        return {**follower.drift(), "counts": follower.counts.to_dict()}

    def reset_memory(self) -> None:
        """Back to the memory the model was trained with (undoes drift following)."""
        self._check_fitted()
        follower = getattr(self, "follower_", None)
        if follower is not None:
            follower.reset()

    def _in_input_order(self, data: SensorData, values: np.ndarray) -> np.ndarray:
        """Back to the caller's row order. With resampling, an input row gets the score of the
        last grid row its reading was the newest for (NaN for a reading superseded before the
        next grid time)."""
        out = np.full(data.n_source_rows, np.nan)
        positions = data.positions if data.positions is not None else data.row_numbers - 2
        out[positions] = values
        return out

    def score_samples(self, X: InputData) -> np.ndarray:
        """One score per input row, in input order; higher = more abnormal; NaN during warm-up."""
        data, result = self.score_rows(X)
        return self._in_input_order(data, result.score)

    def decision_function(self, X: InputData) -> np.ndarray:
        """PyOD's meaning: the same as `score_samples`, higher = more abnormal (scikit-learn's
        outlier detectors point the other way: there negative means outlier)."""
        return self.score_samples(X)

    def normalised_scores(self, X: InputData) -> np.ndarray:
        """Scores divided by the threshold: 1.0 is the alarm level."""
        return self.score_samples(X) / self.threshold_

    def predict(self, X: InputData) -> np.ndarray:
        """1 where the score reaches the threshold, else 0 (warm-up rows are 0)."""
        return _labels(self.score_samples(X), self.threshold_)

    def alarms(self, X: InputData) -> np.ndarray:
        """1 where the alarm rule (`alarm_rule_`: persistence, hysteresis, minimum duration) has
        the alarm on, else 0, in input order: what an operator's alarm panel shows."""
        data, result = self.score_rows(X)
        assert result.alarm is not None
        return np.nan_to_num(self._in_input_order(data, result.alarm.astype(np.float64)), nan=0.0).astype(
            np.int64
        )

    def episodes(self, X: InputData) -> pd.DataFrame:
        """The alarm episodes in X, one row each (memae_ts.detection.alarms.episodes_frame): asset, start,
        end, duration, windows, peak normalised score and its time, top sensors, end reason."""
        data, result = self.score_rows(X)
        return episodes_frame(result.episodes, data.sensors, data.timestamps is not None)

    def tail_probability(self, X: InputData) -> np.ndarray:
        """Per input row, the share of normal windows expected at or above its score
        (memae_ts.detection.tails); NaN during warm-up. Comparable across models and assets."""
        if self.tail_ is None:
            raise MemaeError(
                "this bundle has no tail model (written before memae-ts had tail probabilities); "
                "fit it again to get one"
            )
        return self.tail_.tail_probability(self.score_samples(X))

    # ------------------------------------------------------------------ alarms and budgets
    def _alarm_rule(self) -> AlarmRule:
        return AlarmRule(
            k=self.alarm_k,
            n=self.alarm_n,
            clear_level=self.alarm_clear,
            min_windows=self.alarm_min_windows,
        ).validate()

    def _budget_given(self) -> bool:
        per_day, per_1000 = self.false_alarms_per_day, self.false_alarms_per_1000_windows
        if per_day is not None and per_1000 is not None:
            raise DataError("give one false-alarm budget: per day or per 1000 windows, not both")
        for name, value in (("false_alarms_per_day", per_day), ("false_alarms_per_1000_windows", per_1000)):
            if value is not None and not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise DataError(f"{name} must be a positive number, got {value!r}")
        return per_day is not None or per_1000 is not None

    def _calibration_slice(
        self, data: SensorData, segments: Any, ends: np.ndarray, val_ends: np.ndarray
    ) -> tuple[np.ndarray, Calibration]:
        """The windows the alarm rule's rates and the tail probability are calibrated on.

        With a false-alarm budget, the held-out tail is split: its first half stops training
        early, its second half (the last validation_fraction/2 of each asset's rows) calibrates,
        so the threshold is not set on the windows that chose the epoch. The cost, on a short
        file: half the held-out windows for each, and the windows straddling the cut (window-1
        per asset) are used by neither. Without a budget, the early-stopping windows serve both
        (as before), in sequence, the last MAX_CALIBRATION_WINDOWS of them."""
        window = self.window
        if self._budget_given():
            is_cal = _validation_rows(data, self.validation_fraction / 2)
            cal_ends = ends[is_cal[ends - window + 1]]
            val_ends = val_ends[~is_cal[val_ends]]
            if cal_ends.size < MIN_CALIBRATION_WINDOWS:
                raise DataError(
                    f"{data.source}: a false-alarm budget needs at least {MIN_CALIBRATION_WINDOWS} windows "
                    f"held out from training and early stopping; the last {self.validation_fraction / 2:.0%} "
                    f"of the rows give {cal_ends.size}. Use more data or a larger --validation-fraction"
                )
            separate = True
        else:
            cal_ends, separate = val_ends, False
        cal_ends = cal_ends[-MAX_CALIBRATION_WINDOWS:]
        new_stretch = np.ones(cal_ends.size, dtype=bool)
        new_stretch[1:] = np.diff(cal_ends) != 1
        new_stretch |= np.isin(cal_ends - window + 1, segments.starts)
        from memae_ts.io.windows import median_period_seconds

        calibration = Calibration(
            n=int(cal_ends.size),
            windows=lambda part: gather(segments.values, cal_ends[part], window),
            new_stretch=new_stretch,
            seconds_per_window=median_period_seconds(data),
            separate=separate,
        )
        return val_ends, calibration

    def _calibrate_alarms(
        self,
        config: dict[str, Any],
        engine: Any,
        held_out_scores: np.ndarray,
        calibration: Calibration | None,
    ) -> None:
        """The alarm rule, the threshold from a false-alarm budget (when given), what budget the
        threshold corresponds to, and the tail model, into the bundle config."""
        from memae_ts.detection.tails import EpisodeRate, budget_threshold
        from memae_ts.detection.threshold import Threshold

        rule = self._alarm_rule()
        config["alarm"] = rule.to_config()
        if calibration is not None and calibration.n == 0 and not self._budget_given():
            calibration = None  # no held-out window at all: the windows the threshold came from
        if calibration is None:  # a streamed fit: the held-out windows are a sample, not a sequence
            config["tail"] = TailModel.fit(
                held_out_scores, np.ones(held_out_scores.size, dtype=bool), self.window
            ).to_config()
            config["threshold"]["expected"] = None
            return
        scores = np.empty(calibration.n)
        for start in range(0, calibration.n, BATCH_WINDOWS):
            part = slice(start, min(start + BATCH_WINDOWS, calibration.n))
            scores[part] = engine.score(calibration.windows(part))[0]
        config["tail"] = TailModel.fit(scores, calibration.new_stretch, self.window).to_config()
        rate = EpisodeRate.fit(scores, calibration.new_stretch, rule, calibration.seconds_per_window)
        if self._budget_given():
            if self.false_alarms_per_day is not None:
                if not calibration.seconds_per_window:
                    raise DataError(
                        f"{config['data']['source']}: a budget per day needs a time column; "
                        "give --false-alarms-per-1000-windows instead"
                    )
                budget, unit = float(self.false_alarms_per_day), "per day"
                per_window = budget * calibration.seconds_per_window / 86_400.0
            else:
                budget, unit = float(self.false_alarms_per_1000_windows or 0), "per 1000 windows"
                per_window = budget / 1000.0
            value, how = budget_threshold(rate, per_window)
            details: dict[str, Any] = {
                "budget": budget, "budget_unit": unit, "found_by": how, "n_scores": calibration.n,
            }  # fmt: skip
            if how == "max":
                # Too few peaks to fit a tail: the largest persisted score is the lowest threshold
                # with no episode in the slice, and a short slice understates later normal
                # operation (the reason for the margin): the margin applies on top of it.
                details.update({"calibrated_value": value, "margin": self.threshold_margin})
                value *= self.threshold_margin
                warnings.warn(
                    f"{config['data']['source']}: the false-alarm budget is rarer than the "
                    f"{calibration.n} calibration windows can show and too few peaks to fit a tail: "
                    f"threshold = largest persisted score x margin {self.threshold_margin:g}; "
                    "`memae-ts info` says what budget it corresponds to",
                    DataWarning,
                    stacklevel=4,
                )
            config["threshold"] = Threshold("budget", value, details).to_config()
        config["threshold"]["expected"] = rate.report(float(config["threshold"]["value"]))
        shared = "the early-stopping windows"
        slice_used = "held out from training and early stopping" if calibration.separate else shared
        config["threshold"]["calibration_slice"] = slice_used

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> str:
        self._check_fitted()
        saved = save_bundle(path, self.bundle_)
        return saved.path


MIN_CALIBRATION_WINDOWS = 100  # a budget needs at least this many windows held out for it
MAX_CALIBRATION_WINDOWS = 50_000  # consecutive windows the alarm rates and tail are calibrated on


@dataclass
class Calibration:
    """The calibration windows in sequence: how many, a slice at a time (raw readings), where a
    new stretch starts, and the time one window step stands for (None without a time column)."""

    n: int
    windows: Callable[[slice], np.ndarray]
    new_stretch: np.ndarray
    seconds_per_window: float | None
    separate: bool  # held out from early stopping too


def _labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """1 where a score reaches the threshold, else 0; warm-up rows (NaN) are 0."""
    return (np.nan_to_num(scores, nan=0.0) >= threshold).astype(np.int64)


def evenly_spaced(items: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `items`, spread evenly from first to last (all of them when fewer):
    deterministic, so the same data and seed give the same bundle."""
    if items.size <= limit:
        return items
    return items[np.linspace(0, items.size - 1, limit).round().astype(np.int64)]


def _validation_rows(data: SensorData, fraction: float) -> np.ndarray:
    """The last `fraction` of each asset's rows (in time) are held out for validation."""
    is_val = np.zeros(len(data), dtype=bool)
    for rows in asset_rows(data):
        cut = round(len(rows) * (1 - fraction))
        is_val[rows[cut:]] = True
    return is_val


def load(path: str | os.PathLike[str], engine: str = "auto") -> MemAE:
    """Load a bundle for scoring; `engine` picks runtime, torch, onnx or numpy."""
    from memae_ts.engines import make_engine

    bundle = load_bundle(path)
    params = dict(bundle.config.get("training", {}).get("params", {}))
    model = MemAE()
    for key, value in params.items():
        if hasattr(model, key):
            setattr(model, key, value)
    model.time_column = bundle.config.get("time_column")
    model.asset_column = bundle.config.get("asset_column")
    model.engine = engine
    model._set_fitted(bundle, make_engine(bundle, engine))
    return model
