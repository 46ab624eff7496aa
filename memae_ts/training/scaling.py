"""Per-sensor scaling fitted on training data and stored in the bundle."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memae_ts.errors import DataError, DataWarning

SCALERS = ("standard", "robust")
_IQR_TO_SIGMA = 1.349  # IQR of a unit normal, so robust and standard scales agree on clean data


@dataclass(frozen=True)
class Scaler:
    kind: str
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        kind: str,
        sensors: Sequence[str],
        min_relative_scale: float = 0.0,
        min_span_scale: float = 0.0,
    ) -> Scaler:
        """Robust scaling keeps rare spikes in the training data from shrinking every reading.

        `min_relative_scale` floors each sensor's scale at that fraction of its level (|center|).
        Why: a short training file sees slow sensors (temperatures) barely move, so their standard
        deviation is tiny and ordinary drift later reads as a 10-sigma event. On SKAB's
        anomaly-free recording the long-run std of the thermocouple is 17x its typical 400-row std.
        A 1 % floor says: a change below 1 % of the reading is not evidence by itself.

        `min_span_scale` floors it instead (or as well) at that fraction of the sensor's training
        span, the range between its 1st and 99th percentiles (percentiles, so a few spikes do not
        set it). Why: the level floor depends on the unit and the zero point (1 % of 80 °C is
        0.8 K, 1 % of 353 K is 3.5 K; a gauge pressure near 0 gets no floor at all); a span is
        the same in °C and K. docs/benchmarks.md has the measurement of one against the other.
        """
        if min_relative_scale < 0:
            raise DataError(f"min_relative_scale must be >= 0, got {min_relative_scale}")
        if min_span_scale < 0:
            raise DataError(f"min_span_scale must be >= 0, got {min_span_scale}")
        if kind not in SCALERS:
            raise DataError(f"unknown scaler {kind!r}; choose one of {SCALERS}")
        if kind == "standard":
            center = np.nanmean(values, axis=0)
            scale = np.nanstd(values, axis=0)
        else:
            center = np.nanmedian(values, axis=0)
            q75, q25 = np.nanpercentile(values, [75, 25], axis=0)
            scale = (q75 - q25) / _IQR_TO_SIGMA
            fallback = np.nanstd(values, axis=0)
            scale = np.where(scale > 0, scale, fallback)
        span = training_span(values) if min_span_scale > 0 else None
        return cls.from_statistics(kind, center, scale, sensors, min_relative_scale, min_span_scale, span)

    @classmethod
    def from_statistics(
        cls,
        kind: str,
        center: np.ndarray,
        scale: np.ndarray,
        sensors: Sequence[str],
        min_relative_scale: float = 0.0,
        min_span_scale: float = 0.0,
        span: np.ndarray | None = None,
    ) -> Scaler:
        """The scaler for per-sensor statistics computed elsewhere (streamed over a file larger
        than memory): the same floors and constant-sensor rule as `fit`. `span` (per sensor, from
        `training_span` of the rows or of a sample of them) is needed when `min_span_scale` > 0."""
        if min_relative_scale < 0:
            raise DataError(f"min_relative_scale must be >= 0, got {min_relative_scale}")
        if min_span_scale < 0:
            raise DataError(f"min_span_scale must be >= 0, got {min_span_scale}")
        if min_span_scale > 0 and span is None:
            raise ValueError("min_span_scale > 0 needs the training span of every sensor")
        center = np.asarray(center, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        constant = [name for name, s in zip(sensors, scale, strict=True) if not s > 1e-12]
        if constant:
            warnings.warn(
                f"sensor column(s) {constant} are constant in the training data; any change in "
                "them will read as an anomaly",
                DataWarning,
                stacklevel=2,
            )
        scale = np.maximum(scale, min_relative_scale * np.abs(center))
        if min_span_scale > 0 and span is not None:
            scale = np.maximum(scale, min_span_scale * np.nan_to_num(np.asarray(span, dtype=np.float64)))
        # A constant sensor keeps unit scale: a later change still shows, measured in raw units.
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(kind=kind, center=center.astype(np.float64), scale=scale.astype(np.float64))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.center) / self.scale

    def transform_float32(self, values: np.ndarray) -> np.ndarray:
        """The scaled series as float32, one column at a time: the same numbers as
        `transform(values).astype(float32)` without a float64 copy of the whole table."""
        out = np.empty(values.shape, dtype=np.float32)
        for j in range(values.shape[1]):
            out[:, j] = (values[:, j] - self.center[j]) / self.scale[j]
        return out

    def to_config(self) -> dict[str, object]:
        return {"kind": self.kind, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, object]) -> Scaler:
        return cls(
            kind=str(config["kind"]),
            center=np.asarray(config["center"], dtype=np.float64),
            scale=np.asarray(config["scale"], dtype=np.float64),
        )


SPAN_PERCENTILES = (1.0, 99.0)


def training_span(values: np.ndarray) -> np.ndarray:
    """Each sensor's training span for `min_span_scale`: its 99th minus its 1st percentile
    (missing values ignored). Percentiles rather than max - min, so that 1 % of the rows at
    either end (spikes, a stuck reading) cannot widen it; an all-missing sensor gets 0."""
    if values.shape[0] == 0:
        return np.zeros(values.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: its span is 0 below
        low, high = np.nanpercentile(values, SPAN_PERCENTILES, axis=0)
    return np.nan_to_num(high - low)
