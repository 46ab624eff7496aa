"""Cutting a sensor table into sliding windows that never lie.

A window must show the machine as it was over `window` consecutive samples: it never crosses
from one asset to another, never spans a time gap (a logger outage, a shutdown), and never
contains a long stretch of made-up values. Short dropouts are forward-filled; longer ones split
the series into segments, and windows live inside segments only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from memae_ts.errors import DataError
from memae_ts.io.data import DEFAULT_GAP_PERIODS, SensorData
from memae_ts.io.summary import gap_counts


@dataclass(frozen=True)
class Segments:
    """Filled values plus the [start, stop) row ranges in which windows may be cut."""

    values: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    def lengths(self) -> np.ndarray:
        return self.stops - self.starts


def median_period_seconds(data: SensorData) -> float | None:
    """The typical sampling period, from positive time steps within each asset."""
    if data.timestamps is None or len(data) < 2:
        return None
    steps = np.diff(data.timestamps.as_unit("ns").asi8).astype(np.float64) / 1e9
    if data.assets is not None:
        steps = steps[data.assets[1:] == data.assets[:-1]]
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    return float(np.median(steps))


def default_max_gap_seconds(data: SensorData) -> float | None:
    period = median_period_seconds(data)
    return None if period is None else DEFAULT_GAP_PERIODS * period


def segment(data: SensorData, *, max_gap_seconds: float | None, max_fill_rows: int) -> Segments:
    """Forward-fill short gaps per asset, then split where data is missing or time jumps."""
    n = len(data)
    values = _forward_filled(data, max_fill_rows)
    valid = ~np.isnan(values).any(axis=1)

    boundary = np.zeros(n, dtype=bool)  # True where row i starts a new run
    if n:
        boundary[0] = True
    if data.assets is not None and n > 1:
        boundary[1:] |= data.assets[1:] != data.assets[:-1]
    if data.timestamps is not None and max_gap_seconds is not None and n > 1:
        steps = np.diff(data.timestamps.as_unit("ns").asi8) / 1e9
        boundary[1:] |= steps > max_gap_seconds
    # Invalid rows end a run; the next valid row starts a new one.
    boundary[1:] |= ~valid[:-1]

    starts: list[int] = []
    stops: list[int] = []
    current: int | None = None
    for i in np.flatnonzero(boundary | ~valid):
        if current is not None:
            stops.append(int(i))
            starts.append(current)
            current = None
        if valid[i]:
            current = int(i)
    if current is not None:
        starts.append(current)
        stops.append(n)
    # Runs found above may contain later breaks only at boundary rows, which we visited.
    return Segments(values=values, starts=np.asarray(starts, np.int64), stops=np.asarray(stops, np.int64))


def _forward_filled(data: SensorData, max_fill_rows: int) -> np.ndarray:
    """Each asset's short dropouts filled with the last reading. Only columns with a missing value
    are copied and filled: a long clean history is not duplicated in memory."""
    values = np.asarray(data.values, dtype=np.float64)
    missing = np.isnan(values).any(axis=0)
    if max_fill_rows == 0 or not missing.any():
        return values
    values = values.copy()
    for j in np.flatnonzero(missing):
        column = pd.Series(values[:, j])
        if data.assets is not None:
            column = column.groupby(data.assets, sort=False).ffill(limit=max_fill_rows)
        else:
            column = column.ffill(limit=max_fill_rows)
        values[:, j] = column.to_numpy(dtype=np.float64)
    return values


def window_ends(segments: Segments, window: int, stride: int = 1) -> np.ndarray:
    """Row index of the last row of every window that fits inside one segment."""
    if window < 1 or stride < 1:
        raise DataError(f"window ({window}) and stride ({stride}) must be positive")
    ends = [
        np.arange(start + window - 1, stop, stride, dtype=np.int64)
        for start, stop in zip(segments.starts, segments.stops, strict=True)
        if stop - start >= window
    ]
    return np.concatenate(ends) if ends else np.empty(0, dtype=np.int64)


def gather(values: np.ndarray, ends: np.ndarray, window: int, dtype: type = np.float32) -> np.ndarray:
    """Windows (batch, window, sensors) ending at `ends`, as a new contiguous array."""
    offsets = np.arange(-window + 1, 1, dtype=np.int64)
    return np.ascontiguousarray(values[ends[:, None] + offsets[None, :]], dtype=dtype)


def require_windows(data: SensorData, segments: Segments, ends: np.ndarray, window: int) -> None:
    """Explain why a file yields no window instead of training on nothing."""
    if ends.size:
        return
    longest = int(segments.lengths().max()) if segments.starts.size else 0
    raise DataError(
        f"{data.source}: no complete window of {window} rows: the file has {len(data)} rows and "
        f"its longest stretch without gaps or missing values is {longest} rows. "
        f"Use a smaller --window, a larger --max-gap, or more data."
    )


def gap_report(
    data: SensorData, segments: Segments, window: int, max_gap_seconds: float | None, max_fill_rows: int
) -> dict[str, object]:
    """What the gap rules did, for the summary: stretches, rows that no window covers, time
    splits, and per sensor the cells forward-filled and the cells left missing."""
    lengths = segments.lengths()
    time_splits = 0
    if data.timestamps is not None and max_gap_seconds is not None and len(data) > 1:
        steps = np.diff(data.timestamps.as_unit("ns").asi8) / 1e9
        same_asset = (
            np.ones(len(steps), dtype=bool) if data.assets is None else data.assets[1:] == data.assets[:-1]
        )
        time_splits = int(np.sum((steps > max_gap_seconds) & same_asset))
    filled, unfilled = gap_counts(data.values, segments.values, data.sensors)
    return {
        "window": window,
        "rows": len(data),
        "segments": int(lengths.size),
        "rows_in_windows": int(lengths[lengths >= window].sum()),
        "max_gap_seconds": max_gap_seconds,
        "max_fill": max_fill_rows,
        "time_splits": time_splits,
        "filled": filled,
        "unfilled": unfilled,
    }
