"""Drift and staleness per asset: how far live readings and scores have moved from training.

Two cheap per-asset statistics, both kept by the processor and exported as metrics:

* **Out of the training range**: for each sensor, a reading below the smallest or above the
  largest value of the training data (``training.sensor_range`` in the bundle config, written by
  ``fit`` since this version) is counted. Readings of a sensor the model never saw at such
  values are extrapolation: the score may still be right, but nothing in training vouches for it.
  Old bundles do not know their range: the model reports it as unavailable
  (``memae_ts_training_range_known{model} 0``) and nothing is counted.
* **Rolling high quantile of the normalised score** (:class:`RollingQuantile`): the p95 over the
  last hour of *reading time*. Method: each asset keeps 12 histograms, one per five-minute slot
  of reading time (slot = ``floor(ts / 300)``); a score goes into its slot's histogram, whose
  bins are log-spaced, 24 per decade, from 0.01 to 100 (plus one bin below and one above). The
  quantile is read from the sum of the slots of the last hour (the newest slot and the 11 before
  it, i.e. between 55 and 60 minutes of readings) as the geometric middle of the bin that holds
  it: within a factor 10^(1/48) ≈ 1.049 of the exact quantile of those scores (values below 0.01
  are reported as 0.01, above 100 as 100). Memory: 12 × 98 counters per asset; an update is one
  ``bincount``. Reading time, not arrival time: a backlog replayed after an outage gives the
  same value as live, and the same as offline scores of those readings.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SLOT_SECONDS = 300.0
SLOTS = 12  # one hour
BINS_PER_DECADE = 24
LOWEST, HIGHEST = 0.01, 100.0

_DECADES = round(np.log10(HIGHEST / LOWEST))
_EDGES = LOWEST * 10.0 ** (np.arange(_DECADES * BINS_PER_DECADE + 1) / BINS_PER_DECADE)
# Value reported for each bin: below range, the geometric middles, above range.
_MIDDLES = np.concatenate([[LOWEST], np.sqrt(_EDGES[:-1] * _EDGES[1:]), [HIGHEST]])
N_BINS = len(_MIDDLES)
_EDGE_LIST = _EDGES.tolist()
RELATIVE_ERROR = 10.0 ** (0.5 / BINS_PER_DECADE) - 1.0


@dataclass(frozen=True)
class TrainingRange:
    """Per sensor, the smallest and largest value seen in training (bundle sensor order)."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_config(cls, config: dict[str, Any], sensors: Sequence[str]) -> TrainingRange | None:
        """The range stored by ``fit`` (``training.sensor_range``), or None for a bundle fitted
        before it was stored (or whose range does not fit its sensors)."""
        raw = (config.get("training") or {}).get("sensor_range")
        if not isinstance(raw, dict):
            return None
        try:
            low = np.array([np.nan if v is None else float(v) for v in raw["min"]], dtype=np.float64)
            high = np.array([np.nan if v is None else float(v) for v in raw["max"]], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return None
        if len(low) != len(sensors) or len(high) != len(sensors):
            return None
        return cls(low, high)

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Per sensor (column), how many rows of ``values`` lie outside the range. A missing
        value is not counted; a sensor without a known range (NaN) never counts."""
        return self.outside_rows(values).sum(axis=0)

    def outside_rows(self, values: np.ndarray) -> np.ndarray:
        """Per row and sensor, whether the value lies outside the range (as :meth:`outside`)."""
        with np.errstate(invalid="ignore"):
            return (values < self.low) | (values > self.high)


class RollingQuantile:
    """The high quantile of one asset's normalised scores over the last hour (module docstring)."""

    __slots__ = ("counts", "newest", "slot_ids")

    def __init__(self) -> None:
        self.counts = np.zeros((SLOTS, N_BINS), dtype=np.int64)
        self.slot_ids = np.full(SLOTS, np.iinfo(np.int64).min, dtype=np.int64)
        self.newest: int | None = None

    def add(self, ts: np.ndarray, normalised: np.ndarray) -> None:
        """Scores (normalised) of readings at times ``ts`` (Unix seconds), any order."""
        if len(ts) == 1:  # many assets: one score per asset and slice, no array work
            self.add_one(float(ts[0]), float(normalised[0]))
            return
        ts = np.asarray(ts, dtype=np.float64)
        normalised = np.asarray(normalised, dtype=np.float64)
        ok = np.isfinite(normalised) & np.isfinite(ts)
        if not ok.all():
            ts, normalised = ts[ok], normalised[ok]
        if not len(ts):
            return
        slots = np.floor(ts / SLOT_SECONDS).astype(np.int64)
        top = int(slots.max())
        if self.newest is None or top > self.newest:
            self.newest = top
        keep = slots > self.newest - SLOTS  # older than the hour: ignored
        bins = np.searchsorted(_EDGES, normalised, side="right")  # 0: below, N_BINS-1: above
        for slot in np.unique(slots[keep]).tolist():
            ring = slot % SLOTS
            if self.slot_ids[ring] != slot:
                self.counts[ring] = 0
                self.slot_ids[ring] = slot
            self.counts[ring] += np.bincount(bins[keep & (slots == slot)], minlength=N_BINS)

    def add_one(self, ts: float, normalised: float) -> None:
        if not (math.isfinite(ts) and math.isfinite(normalised)):
            return
        slot = int(ts // SLOT_SECONDS)
        if self.newest is None or slot > self.newest:
            self.newest = slot
        elif slot <= self.newest - SLOTS:
            return
        ring = slot % SLOTS
        if self.slot_ids[ring] != slot:
            self.counts[ring] = 0
            self.slot_ids[ring] = slot
        self.counts[ring, bisect.bisect_right(_EDGE_LIST, normalised)] += 1

    def quantile(self, q: float = 0.95) -> float | None:
        """The quantile over the last hour; None before any score."""
        if self.newest is None:
            return None
        live = self.slot_ids > self.newest - SLOTS
        hist = self.counts[live].sum(axis=0)
        total = int(hist.sum())
        if total == 0:
            return None
        # The smallest bin whose cumulative count reaches ceil(q * n) (the "lower" quantile).
        rank = max(1, int(np.ceil(q * total)))
        return float(_MIDDLES[int(np.searchsorted(np.cumsum(hist), rank))])
