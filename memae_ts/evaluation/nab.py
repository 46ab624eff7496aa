"""NAB-style changepoint score, as the SKAB changepoint leaderboard computes it (numpy only).

Why a second family of scores: point-wise F1 rewards covering the whole labelled segment, while
an operator cares about *when* the alarm starts. The changepoint view turns the row alarms into
events (every switch of the alarm on or off is a predicted changepoint) and rewards an event that
falls inside a short window around a labelled changepoint, the earlier the better; every other
event costs a little and a window without an event costs a lot.

Definition (SKAB's evaluation, `chp_score(metric="nab")` with its defaults as the leaderboard
calls it: 30 s windows centred on each labelled changepoint, the "improved" scaled sigmoid):
- predicted changepoints: rows where the 0/1 alarm differs from the previous row, plus the first
  row if it is an alarm;
- a window [t - 15 s, t + 15 s] per labelled changepoint (where windows overlap, the later one
  starts where the earlier one ends); the first predicted changepoint inside scores
  A_tp·(left edge) … A_fp·(right edge) along a tanh curve; later ones inside the window are free;
- each predicted changepoint outside every window adds A_fp; each window without one adds A_fn;
- pooled over files: 100 · (S − S_null) / (S_perfect − S_null), where S_null = windows · A_fn
  (no detections at all) and S_perfect = windows · A_tp.
Profiles (A_tp, A_fp, A_fn): standard (1, −0.11, −1), low FP (1, −0.22, −1), low FN (1, −0.11, −2).
Used by `memae-ts evaluate --changepoint-column` and by bench/skab.py; checked against SKAB's own
evaluation code (the `tsad` package) as docs/benchmarks.md describes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}
WINDOW_SECONDS = 30.0


@dataclass
class ChangepointEvents:
    """One series reduced to what the score needs: detection windows and predicted events."""

    windows: list[tuple[float, float]]  # [start, end] in seconds, sorted, not overlapping
    events: np.ndarray  # times (seconds) of predicted changepoints, sorted


def events_of(
    times: np.ndarray, changepoints: np.ndarray, alarms: np.ndarray, window_seconds: float = WINDOW_SECONDS
) -> ChangepointEvents:
    """Windows around the labelled changepoints and the switch times of the alarm series."""
    times = np.asarray(times, dtype=np.float64)
    alarms = np.asarray(alarms).astype(bool)
    half = window_seconds / 2
    windows = [[t - half, t + half] for t in times[np.asarray(changepoints) == 1]]
    for earlier, later in itertools.pairwise(windows):
        if earlier[1] >= later[0]:
            later[0] = earlier[1]  # SKAB's "cut right window"
    switches = np.flatnonzero(np.diff(alarms.astype(np.int8)) != 0) + 1
    if alarms.size and alarms[0]:
        switches = np.r_[0, switches]
    return ChangepointEvents(windows=[(a, b) for a, b in windows], events=times[switches])


def _detection_credit(position: float, a_tp: float, a_fp: float) -> float:
    """Credit of the first event at `position` (0 = window start, 1 = end), SKAB's 1000-step curve."""
    steps = 1000
    step = min(int(position * steps), steps - 1)
    x = -math.pi / 2 + math.pi * step / (steps - 1)
    half = (a_tp - a_fp) / 2
    return -half * math.tanh(x) / math.tanh(math.pi / 2) + half + a_fp


def raw_scores(series: ChangepointEvents, profile: tuple[float, float, float]) -> tuple[float, float, float]:
    """(score, null score, perfect score) of one series; sum these over series, then normalise."""
    a_tp, a_fp, a_fn = profile
    events = series.events
    inside = np.zeros(events.size, dtype=bool)
    score = 0.0
    for start, end in series.windows:
        hit = (events >= start) & (events <= end)
        inside |= hit
        if hit.any():
            position = (events[hit][0] - start) / (end - start) if end > start else 0.0
            score += _detection_credit(position, a_tp, a_fp)
        else:
            score += a_fn
    score += a_fp * int(np.sum(~inside))
    n = len(series.windows)
    return score, n * a_fn, n * a_tp


def nab(series: Sequence[ChangepointEvents]) -> dict[str, float]:
    """Pooled NAB score per profile, 0 = no detections, 100 = perfect; NaN without changepoints."""
    out: dict[str, float] = {}
    for name, profile in PROFILES.items():
        totals = np.sum([raw_scores(s, profile) for s in series], axis=0) if series else np.zeros(3)
        score, null, perfect = (float(v) for v in totals)
        out[name] = 100 * (score - null) / (perfect - null) if perfect != null else float("nan")
    return out
