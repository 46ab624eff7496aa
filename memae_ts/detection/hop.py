"""Scoring hop: score every k-th window end per asset instead of every one.

Why: scoring every reading of a 1 Hz - 100 Hz stream is often more than a plant needs, and the
engine is most of the edge daemon's CPU. With ``hop = k`` the engine sees about 1/k of the
windows.

**The anchor is the clock, not a counter.** A window is scored when its end time falls in a later
interval of ``k`` sampling periods than the row before it in its stretch, intervals counted
from the Unix epoch (``floor(t / (k * period))`` in whole microseconds). On regular data at the
model's period that is exactly every k-th window, the ones whose end time is a multiple of
``k * period``; with jitter it is the first window in each interval. Why the clock: the
decision depends only on the window's end time and the previous row's, so ``memae-ts score``
and the daemon pick the same rows, and a daemon restarted anywhere keeps the phase (its buffer
rebuild replays the rows before the next window). The first window after a gap is scored only
when it opens a new interval too (at most k - 1 windows later than without a hop); its
stretch-start flag passes to the next scored window, so the alarm rule still forgets at the gap.
A counter since the stretch start would need per-asset state stored with every Kafka commit.

The period is the model's: the resampling grid's for a model fitted on resampled data,
otherwise the median sampling period of its training data (``data.period_seconds`` in the
bundle). Data without a time column (offline only) counts rows: every k-th row.

What a hop costs: an anomaly is seen up to ``k - 1`` readings later, and the alarm rule counts
windows (memae_ts.detection.alarms), so "3 of the last 5 windows" spans 5 scored windows, about ``5 * k``
readings: raise persistence in windows with that in mind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memae_ts.errors import DataError

NO_PREVIOUS = np.iinfo(np.int64).min  # a window with no row before it in its stretch: scored


def check_hop(hop: Any, option: str = "hop") -> int:
    """A hop as the user wrote it → a positive integer (1 = score every window)."""
    if isinstance(hop, bool) or not isinstance(hop, (int, np.integer, str)):
        raise DataError(f"{option} must be a whole number of windows >= 1, got {hop!r}")
    try:
        k = int(hop)
    except ValueError as exc:
        raise DataError(f"{option} must be a whole number of windows >= 1, got {hop!r}") from exc
    if k < 1:
        raise DataError(f"{option} must be a whole number of windows >= 1, got {hop!r}")
    return k


def model_period_seconds(config: dict[str, Any]) -> float | None:
    """The sampling period a hop counts in: the resampling grid's, else the training data's
    median period; None when the bundle knows neither (fitted without a time column)."""
    resample = config.get("resample")
    if resample is not None and resample.get("period_seconds"):
        return float(resample["period_seconds"])
    period = (config.get("data") or {}).get("period_seconds")
    return float(period) if period else None


def hop_interval_us(k: int, period_seconds: float | None, option: str = "hop") -> int:
    """The interval of ``k`` periods in whole microseconds (at least 1)."""
    if period_seconds is None or not period_seconds > 0:
        raise DataError(
            f"{option} = {k} needs the model's sampling period, and this bundle does not store one "
            "(fitted without a time column, or before it was recorded); refit it, or leave the hop at 1"
        )
    return max(1, round(k * period_seconds * 1e6))


def to_microseconds(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds (float) → whole microseconds, as both the daemon and `score` compute them."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)


def hop_keep(times_us: np.ndarray, previous_us: np.ndarray, interval_us: int) -> np.ndarray:
    """Which windows to score: those whose end time ``times_us`` falls in a later interval than
    the time of the row before it in its stretch, ``previous_us`` (``NO_PREVIOUS``: none)."""
    times = np.asarray(times_us, dtype=np.int64)
    before = np.asarray(previous_us, dtype=np.int64)
    keep = np.floor_divide(times, interval_us) != np.floor_divide(before, interval_us)
    return keep | (before == NO_PREVIOUS)


def carry_starts(keep: np.ndarray, starts: np.ndarray, pending: bool) -> tuple[np.ndarray, bool]:
    """Stretch-start flags of the kept windows: a window the hop leaves out that starts a stretch
    hands its flag to the next kept window (of the same asset), so the alarm rule still forgets
    its memory at the break. ``pending``: a flag left over from the previous call. Returns the
    flags of the kept windows and what is left over for the next call."""
    starts = np.asarray(starts, dtype=bool)
    if not starts.any() and not pending:
        return starts[keep], False
    # Group each window with the kept window that follows it (or the leftover after the last).
    group = np.concatenate([[0], np.cumsum(keep)[:-1]]) if len(keep) else np.zeros(0, dtype=np.int64)
    flags = np.zeros(int(keep.sum()) + 1, dtype=bool)
    np.logical_or.at(flags, group, starts)
    flags[0] |= pending
    return flags[:-1], bool(flags[-1])
