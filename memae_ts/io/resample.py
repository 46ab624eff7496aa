"""Putting readings stored "by exception" onto a regular time grid.

Why: plant historians write a row only when a value changed, so timestamps are irregular and a
sensor that did not change has no row at all. A window of the model must cover a fixed span of
time, so the data is first resampled onto a grid; the edge daemon resamples live readings with
the same rules (``connectors/resampling.py``) and must produce the same numbers. The rules
below are that contract.

Grid
    The multiples of the period counted from the Unix epoch, so a file and a live stream that
    start at different times land on the same grid: from the first multiple at or after the
    first reading to the last multiple at or before the last reading. Times are integer
    nanoseconds (UTC epoch); the period and the limit are rounded to whole nanoseconds.

Readings
    ``values[i, s]`` is NaN when row ``i`` has no reading of sensor ``s`` (the value did not
    change or was not exported: whatever was known before still holds). ``invalid[i, s]`` marks
    a quality marker ("Bad", "I/O Timeout"): the sensor's value is *unknown* from that time until
    its next valid reading. A valid reading is a non-NaN cell that is not a marker.

``hold`` (last value carried forward)
    The value of sensor ``s`` at grid time ``g`` is its last valid reading at a time ``<= g``,
    provided ``g - t_reading <= limit``; otherwise NaN. A marker later than that reading (and
    ``<= g``) makes the value NaN from the marker's time on.

``interpolate`` (linear)
    Linear between the sensor's last valid reading at or before ``g`` and its first valid
    reading at or after ``g``, when both exist, no marker of that sensor lies strictly between
    them and they are at most ``limit`` apart; a reading exactly at ``g`` gives its own value;
    otherwise NaN. The value is ``v0 + (v1 - v0) * ((g - t0) / (t1 - t0))`` in float64 with
    integer-nanosecond differences, so any implementation that follows this formula gets the
    same bits.

The limit defaults to :func:`default_limit` (one hour, or three periods for periods above
20 minutes): long enough that a quiet sensor keeps its value, short enough that an outage
shows up as missing data instead of a flat line.

A NaN in the resampled table is a missing value: windows never contain one (after resampling
the series are split only at such rows, ``segment(max_gap_seconds=None, max_fill_rows=0)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("hold", "interpolate")
NS_PER_SECOND = 1_000_000_000

# Times must lie in [-2**62, 2**62) ns (the years 1823 to 2116) and periods and limits below
# MAX_SECONDS: then no difference or grid point computed here overflows int64.
TIME_LIMIT_NS = 1 << 62
MAX_SECONDS = 1e9


def default_limit(period_seconds: float) -> float:
    """How long a value may be held (or two readings may be apart for interpolation) by
    default: an hour, and never less than three periods."""
    return max(3600.0, 3.0 * period_seconds)


def seconds_to_ns(seconds: float) -> int:
    """A duration in whole nanoseconds (the unit every comparison of the grid is made in)."""
    return round(seconds * NS_PER_SECOND)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(config: Mapping[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = config.get(key)
    if value is None and optional:
        return None
    if not _is_number(value):
        raise ValueError(f"resample.{key} must be a number, got {value!r}")
    return float(value)


def _duration(seconds: float) -> str:
    """10 -> '10 s', 90 -> '90 s', 600 -> '10 min', 3600 -> '1 h'."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class ResampleSpec:
    """How to put one asset's readings on a grid; stored in the bundle config under
    ``"resample"`` (:meth:`to_config`) so the daemon resamples exactly like training did."""

    period_seconds: float
    method: str = "hold"
    limit_seconds: float | None = None  # None -> default_limit(period_seconds)

    def __post_init__(self) -> None:
        period = self.period_seconds
        if not (_is_number(period) and math.isfinite(period) and 0 < period <= MAX_SECONDS):
            raise ValueError(f"resample.period_seconds must be in (0, {MAX_SECONDS:g}], got {period!r}")
        if seconds_to_ns(period) < 1:
            raise ValueError(f"resample.period_seconds must be at least 1 ns, got {period!r}")
        if self.method not in METHODS:
            raise ValueError(f"resample.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        limit = self.limit_seconds
        if limit is not None and not (
            _is_number(limit) and math.isfinite(limit) and 0 <= limit <= MAX_SECONDS
        ):
            raise ValueError(f"resample.limit_seconds must be in [0, {MAX_SECONDS:g}] or null, got {limit!r}")

    def limit(self) -> float:
        """The effective limit in seconds."""
        return default_limit(self.period_seconds) if self.limit_seconds is None else float(self.limit_seconds)

    def period_ns(self) -> int:
        return seconds_to_ns(self.period_seconds)

    def limit_ns(self) -> int:
        return seconds_to_ns(self.limit())

    def to_config(self) -> dict[str, Any]:
        """The bundle's ``"resample"`` entry; the limit is written out (not None) so a later
        change of the default cannot change how an existing model is served."""
        return {
            "period_seconds": float(self.period_seconds),
            "method": self.method,
            "limit_seconds": self.limit(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResampleSpec:
        """Read a ``"resample"`` entry; a missing, mistyped or unknown field is a ValueError
        naming it (an unknown field may come from a newer release with other rules)."""
        if not isinstance(config, Mapping):
            raise ValueError(f"resample must be an object, got {type(config).__name__}")
        unknown = sorted(set(config) - {"period_seconds", "method", "limit_seconds"})
        if unknown:
            raise ValueError(f"resample has unknown field(s) {', '.join(map(repr, unknown))}")
        if "period_seconds" not in config:
            raise ValueError("resample.period_seconds is missing")
        method = config.get("method", "hold")
        if not isinstance(method, str):
            raise ValueError(f"resample.method must be a string, got {method!r}")
        period = _number(config, "period_seconds")
        assert period is not None
        return cls(period, method, _number(config, "limit_seconds", optional=True))

    def describe(self) -> str:
        """One line for logs and the CLI, e.g. ``every 10 s, last value held up to 1 h``."""
        limit = _duration(self.limit())
        if self.method == "hold":
            return f"every {_duration(self.period_seconds)}, last value held up to {limit}"
        return f"every {_duration(self.period_seconds)}, linear between readings up to {limit} apart"


@dataclass
class ResampleStats:
    """What resampling made up and what it dropped, so the CLI can show it.

    ``held_cells`` counts, per sensor, grid cells whose value came from a reading at an earlier
    time (hold) or was interpolated (interpolate); ``exact_cells`` cells that fell exactly on a
    valid reading; ``missing_cells`` cells left NaN (no reading yet, last reading older than the
    limit, after a marker, or readings too far apart to interpolate). ``readings_between``
    counts input rows with at least one valid value of which no grid cell took any: they fell
    between two grid points behind a later reading of the same sensors (or outside the grid),
    so hold skipped them; a high number means the period is coarser than the data.
    """

    input_rows: int
    grid_rows: int
    held_cells: np.ndarray
    exact_cells: np.ndarray
    missing_cells: np.ndarray
    readings_between: int


@dataclass
class Cells:
    """Grid values plus where each came from: ``left``/``right`` are input row indices of the
    readings a cell was taken from (equal for hold and for exact hits; -1 where NaN)."""

    values: np.ndarray
    left: np.ndarray
    right: np.ndarray


def grid_between(first_ns: int, last_ns: int, period_ns: int) -> np.ndarray:
    """Multiples of ``period_ns`` in ``[first_ns, last_ns]`` (empty when there is none)."""
    start = -(-first_ns // period_ns) * period_ns
    stop = (last_ns // period_ns) * period_ns
    if stop < start:
        return np.empty(0, dtype=np.int64)
    return np.arange(start, stop + 1, period_ns, dtype=np.int64)


# Cells per block of sensors in resample_cells: bounds the temporary (rows, sensors) arrays.
BLOCK_CELLS = 1 << 21


def resample_cells(
    times_ns: np.ndarray,
    values: np.ndarray,
    grid_ns: np.ndarray,
    method: str,
    limit_ns: int,
    invalid: np.ndarray | None = None,
) -> Cells:
    """The value of every sensor at the given grid times (any sorted subset of the grid).

    Each grid time is decided on its own from the readings around it, so the offline function
    and the stream call this same code on different slices and get the same bits. Vectorised
    over rows, grid points and a block of sensors at a time (running maxima of valid row
    indices, one ``searchsorted`` of the grid in the times), never a loop per row.
    """
    g, s = len(grid_ns), values.shape[1]
    n = len(times_ns)
    if g == 0 or n == 0:
        return Cells(np.full((g, s), np.nan), np.full((g, s), -1, np.int64), np.full((g, s), -1, np.int64))
    last_row = np.searchsorted(times_ns, grid_ns, side="right") - 1  # last input row <= g (may be -1)
    first_row = np.searchsorted(times_ns, grid_ns, side="left")  # first input row >= g (may be n)
    block = max(1, BLOCK_CELLS // max(n, g))
    parts = []
    for lo in range(0, s, block):
        cols = slice(lo, lo + block)
        markers = None if invalid is None else invalid[:, cols]
        parts.append(
            _cells_block(times_ns, values[:, cols], markers, grid_ns, last_row, first_row, method, limit_ns)
        )
    if len(parts) == 1:
        return parts[0]
    return Cells(
        *(np.concatenate([getattr(p, f) for p in parts], axis=1) for f in ("values", "left", "right"))
    )


def _cells_block(
    times_ns: np.ndarray,
    values: np.ndarray,
    invalid: np.ndarray | None,
    grid_ns: np.ndarray,
    last_row: np.ndarray,
    first_row: np.ndarray,
    method: str,
    limit_ns: int,
) -> Cells:
    n = len(times_ns)
    rows = np.arange(n, dtype=np.int64)[:, None]
    ok = ~np.isnan(values)
    markers = invalid if invalid is not None and invalid.any() else None
    if markers is not None:
        ok &= ~markers
    # Per row and sensor: the last valid row up to it; at each grid time: the last valid <= g.
    last_ok = np.maximum.accumulate(np.where(ok, rows, -1), axis=0)
    left = np.where(last_row[:, None] >= 0, last_ok[np.maximum(last_row, 0)], -1)
    has_left = left >= 0
    left_c = np.maximum(left, 0)
    t_left = times_ns[left_c]
    age = grid_ns[:, None] - t_left
    v0 = np.take_along_axis(values, left_c, axis=0)
    if method == "hold":
        good = has_left & (age <= limit_ns)
        if markers is not None:  # a marker after the held reading (and <= g) ends the hold
            last_bad = np.maximum.accumulate(np.where(markers, rows, -1), axis=0)
            good &= np.where(last_row[:, None] >= 0, last_bad[np.maximum(last_row, 0)], -1) < left
        source = np.where(good, left, -1)
        return Cells(np.where(good, v0, np.nan), source, source)

    # The first valid row from each row on; at each grid time: the first valid >= g.
    next_ok = np.minimum.accumulate(np.where(ok, rows, n)[::-1], axis=0)[::-1]
    right = np.where(first_row[:, None] < n, next_ok[np.minimum(first_row, n - 1)], n)
    right_c = np.minimum(right, n - 1)
    t_right = times_ns[right_c]
    good = has_left & (right < n) & (t_right - t_left <= limit_ns)
    if markers is not None:  # no marker strictly between the two readings
        seen = np.cumsum(markers, axis=0)
        between = np.take_along_axis(seen, np.maximum(right_c - 1, 0), axis=0) - np.take_along_axis(
            seen, left_c, axis=0
        )
        good &= (right_c <= left_c) | (between == 0)
    v1 = np.take_along_axis(values, right_c, axis=0)
    exact = t_right == t_left
    span = np.where(exact, 1, t_right - t_left).astype(np.float64)
    value = np.where(exact, v0, v0 + (v1 - v0) * (age.astype(np.float64) / span))
    return Cells(np.where(good, value, np.nan), np.where(good, left, -1), np.where(good, right, -1))


def _check_inputs(times_ns: np.ndarray, values: np.ndarray, invalid: np.ndarray | None) -> None:
    if times_ns.ndim != 1 or times_ns.dtype != np.int64:
        raise ValueError(f"times_ns must be a 1-D int64 array, got {times_ns.dtype} {times_ns.shape}")
    if values.ndim != 2 or len(values) != len(times_ns):
        raise ValueError(f"values must have shape ({len(times_ns)}, sensors), got {values.shape}")
    if invalid is not None and invalid.shape != values.shape:
        raise ValueError(f"invalid must have the shape of values {values.shape}, got {invalid.shape}")
    if len(times_ns) > 1 and not (np.diff(times_ns) > 0).all():
        first = int(np.flatnonzero(np.diff(times_ns) <= 0)[0]) + 1
        raise ValueError(f"times_ns must be strictly increasing; row {first} is not after row {first - 1}")
    if len(times_ns) and not (-TIME_LIMIT_NS <= times_ns[0] and times_ns[-1] < TIME_LIMIT_NS):
        raise ValueError("times_ns must lie between the years 1823 and 2116 (int64 arithmetic)")


def resample_series(
    times_ns: np.ndarray,
    values: np.ndarray,
    spec: ResampleSpec,
    invalid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ResampleStats]:
    """Resample one asset onto the grid (the rules are in the module docstring).

    ``times_ns`` int64 UTC epoch nanoseconds, strictly increasing; ``values`` float64
    ``(n, sensors)``, NaN = no reading of that sensor in that row; ``invalid`` ``(n, sensors)``
    bool or None, True = the cell is a quality marker. Returns ``(grid_times_ns, grid_values,
    source_row, stats)``: ``grid_values`` is float64 ``(g, sensors)``; ``source_row[i]`` is the
    index of the last input row at or before grid time ``i`` (for row numbers in messages).
    """
    times_ns = np.asarray(times_ns)
    values = np.asarray(values, dtype=np.float64)
    if invalid is not None:
        invalid = np.asarray(invalid, dtype=bool)
    _check_inputs(times_ns, values, invalid)
    n = len(values)
    if n == 0:
        grid = np.empty(0, dtype=np.int64)
    else:
        grid = grid_between(int(times_ns[0]), int(times_ns[-1]), spec.period_ns())
    cells = resample_cells(times_ns, values, grid, spec.method, spec.limit_ns(), invalid)
    source_row = np.searchsorted(times_ns, grid, side="right").astype(np.int64) - 1

    known = cells.left >= 0
    exact = known & (times_ns[np.maximum(cells.left, 0)] == grid[:, None])
    used = np.zeros(n, dtype=bool)
    used[cells.left[known]] = True
    used[cells.right[known]] = True
    has_value = ~np.isnan(values)
    if invalid is not None:
        has_value &= ~invalid
    stats = ResampleStats(
        input_rows=n,
        grid_rows=len(grid),
        held_cells=(known & ~exact).sum(axis=0),
        exact_cells=exact.sum(axis=0),
        missing_cells=(~known).sum(axis=0),
        readings_between=int((has_value.any(axis=1) & ~used).sum()),
    )
    return grid, cells.values, source_row, stats
