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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from memae_ts import __version__
from memae_ts.bundle import Bundle, data_fingerprint, load_bundle, make_bundle, save_bundle
from memae_ts.data import (
    DataWarning,
    ReadOptions,
    SensorData,
    array_to_sensor_data,
    asset_rows,
    frame_to_sensor_data,
    load_csv,
)
from memae_ts.errors import DataError, MemaeError, require_torch
from memae_ts.memory_usage import MAX_WINDOWS as MAX_USAGE_WINDOWS
from memae_ts.memory_usage import collapse_warning
from memae_ts.memory_usage import measure as measure_memory
from memae_ts.scaling import Scaler
from memae_ts.scoring import BATCH_WINDOWS, RowScores, score_rows
from memae_ts.summary import DataSummary
from memae_ts.threshold import calibrate, with_margin
from memae_ts.windows import (
    default_max_gap_seconds,
    gap_report,
    gather,
    require_windows,
    segment,
    window_ends,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from memae_ts.model import MemAENet, NetworkSpec
    from memae_ts.resample import ResampleSpec
    from memae_ts.train import TrainHistory, TrainSettings

log = logging.getLogger(__name__)

# Bounds that keep a fit's time and memory independent of how long the history is.
MAX_EPOCH_WINDOWS = 100_000  # an epoch is a full pass up to this many windows, else a sample
MAX_VALIDATION_WINDOWS = 20_000  # held-out windows for early stopping and the threshold
MAX_SCALER_ROWS = 2_000_000  # rows the scaler statistics are computed from (evenly spaced)

InputData = str | os.PathLike[str] | pd.DataFrame | np.ndarray | SensorData


class MemAE:
    """Memory-augmented autoencoder for multivariate sensor windows.

    Parameters are stored as given; all checking happens in `fit` (scikit-learn convention).
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
        min_relative_scale: float = 0.01,
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
        self.min_relative_scale = min_relative_scale
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

    # ------------------------------------------------------------------ helpers
    def get_params(self) -> dict[str, Any]:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

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
        if isinstance(X, np.ndarray | list):
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
        from memae_ts.regular import make_spec

        return make_spec(self.resample, self.resample_method, self.resample_limit)

    def _check_fitted(self) -> None:
        if not hasattr(self, "bundle_"):
            raise MemaeError("this MemAE is not fitted yet; call fit() or memae_ts.load() first")

    # ------------------------------------------------------------------ fit
    def fit(self, X: InputData, y: Any = None) -> MemAE:
        """Learn normal behaviour from X (a CSV path, a DataFrame or SensorData); `y` is ignored."""
        require_torch()
        from memae_ts.streaming import fit_streaming, streaming_plan
        from memae_ts.train import IndexedWindows, distributed_from_env, train

        if not 0 < self.validation_fraction < 1:
            raise DataError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")

        plan = streaming_plan(X, self.memory_limit)  # a Parquet input larger than memory_limit
        if plan is not None:
            return fit_streaming(self, X, plan=plan)  # type: ignore[arg-type]
        data = self._read(X)
        resample = self.resample_spec()
        if resample is not None:
            from memae_ts.regular import resample_data

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
        )
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
            },
            resample=resample,
        )
        return self._calibrate_and_finish(
            config,
            net,
            history,
            val_ends.size,
            lambda part: gather(segments.values, val_ends[part], self.window),
        )

    # ------------------------------------------------------------------ fit's shared steps
    def _network(self, n_sensors: int) -> tuple[NetworkSpec, MemAENet]:
        """The network spec and a freshly seeded network (the same for every way of fitting)."""
        import torch

        from memae_ts.model import MemAENet, NetworkSpec, validate_spec

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
        from memae_ts.train import TrainSettings

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
    ) -> MemAE:
        """Threshold from the held-out windows' scores, memory use, then the bundle.

        `held_out(part)` gives those raw windows (readings, not scaled) a slice at a time, so
        calibration never holds all of them at once."""
        from memae_ts.engine_torch import TorchEngine

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
        data = bundle.config.get("data")  # what the training data was: read, dropped, filled, left out
        self.data_summary_ = DataSummary.from_dict(data) if isinstance(data, dict) else None

    # ------------------------------------------------------------------ scoring
    def score_rows(self, X: InputData, label_column: str | None = None) -> tuple[SensorData, RowScores]:
        """Scores aligned with the (sorted) SensorData, for the CLI and plots."""
        self._check_fitted()
        data = self._read(X, sensors=self.sensors_, label_column=label_column)
        config = self.bundle_.config
        if config.get("resample") is not None:
            from memae_ts.regular import resample_data
            from memae_ts.resample import ResampleSpec

            data = resample_data(data, ResampleSpec.from_config(config["resample"]))
        return data, score_rows(
            self.engine_,
            data,
            max_gap_seconds=config["max_gap_seconds"],
            max_fill_rows=config["max_fill_rows"],
        )

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

    decision_function = score_samples

    def normalised_scores(self, X: InputData) -> np.ndarray:
        """Scores divided by the threshold: 1.0 is the alarm level."""
        return self.score_samples(X) / self.threshold_

    def predict(self, X: InputData) -> np.ndarray:
        """1 where the score reaches the threshold, else 0 (warm-up rows are 0)."""
        scores = self.score_samples(X)
        return (np.nan_to_num(scores, nan=0.0) >= self.threshold_).astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> str:
        self._check_fitted()
        saved = save_bundle(path, self.bundle_)
        return saved.path


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
