"""From a sensor table to one score per timestamp.

The window ending at row t scores row t: the edge daemon can only score a window once its last
reading has arrived, so offline and live scores agree exactly. Rows before the first complete
window of a segment (warm-up) have no score (NaN).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from memae_ts.io.data import SensorData
from memae_ts.io.windows import gather, segment, window_ends

if TYPE_CHECKING:
    from memae_ts.detection.alarms import AlarmRule, Episode

BATCH_WINDOWS = 2048
TOP_SENSORS = 3


@dataclass
class RowScores:
    """Per-row results aligned with a SensorData; NaN where no window ends."""

    score: np.ndarray
    normalised: np.ndarray
    contributions: np.ndarray
    threshold: float
    # The alarm rule's decision per row (memae_ts.detection.alarms; None: not applied), its episodes, and
    # the share of normal windows at or above each score (None: a bundle without a tail model).
    alarm: np.ndarray | None = None
    episodes: list[Episode] = field(default_factory=list)
    tail_probability: np.ndarray | None = None
    stretch_start: np.ndarray | None = None  # True at the first scored row of each stretch
    # Operating mode (-1: none; NaN where no window ends) and normalised novelty score of a
    # bundle with modes (memae_ts.detection.modes), None for one without; `combine` is its alarm rule.
    mode: np.ndarray | None = None
    novelty: np.ndarray | None = None
    combine: str = "reconstruction"

    @property
    def alarm_level(self) -> np.ndarray:
        """What the alarm decision reads (1.0 = alarm): the reconstruction score, or with
        combine "max" the larger of it and the novelty score."""
        if self.combine == "max" and self.novelty is not None:
            return np.fmax(self.normalised, self.novelty)
        return self.normalised

    @property
    def is_anomaly(self) -> np.ndarray:
        return np.nan_to_num(self.alarm_level, nan=0.0) >= 1.0

    def top_sensors(self, sensors: list[str], k: int = TOP_SENSORS) -> list[str]:
        """`name:share` of the k sensors that reconstruct worst, most to least."""
        out: list[str] = []
        for row in self.contributions:
            if not np.all(np.isfinite(row)):
                out.append("")
                continue
            total = float(row.sum()) or 1.0
            order = np.argsort(-row, kind="stable")[:k]
            out.append(";".join(f"{sensors[j]}:{row[j] / total:.2f}" for j in order))
        return out


def score_windows(
    engine: Any, values: np.ndarray, ends: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and contributions of the windows ending at `ends`, gathered a batch at a time so
    a long file never holds all its windows in memory at once."""
    scores = np.empty(ends.size)
    contributions = np.empty((ends.size, values.shape[1]))
    bar = _progress(ends.size)
    for start in range(0, ends.size, BATCH_WINDOWS):
        chunk = slice(start, start + BATCH_WINDOWS)
        scores[chunk], contributions[chunk] = engine.score(gather(values, ends[chunk], window))
        if bar is not None:
            bar.update(min(BATCH_WINDOWS, ends.size - start))
    if bar is not None:
        bar.close()
    return scores, contributions


PROGRESS_WINDOWS = 500_000  # fewer windows score in seconds: no bar


def _progress(total: int) -> Any:
    """A progress bar for long scoring runs, on a terminal only (tqdm, when installed)."""
    if total < PROGRESS_WINDOWS or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="scoring", unit="window", unit_scale=True, file=sys.stderr, leave=False)


def analyse_windows(
    engine: Any, values: np.ndarray, ends: np.ndarray, window: int, modes: Any, follower: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores, contributions, modes and raw novelty of the windows ending at `ends` (a bundle
    with modes, or drift following). With a follower, windows go in time order in small
    batches and the memory follows after each (memae_ts.detection.following)."""
    from memae_ts.detection.following import FOLLOW_BATCH

    scores = np.empty(ends.size)
    contributions = np.empty((ends.size, values.shape[1]))
    mode = np.empty(ends.size)
    novelty = np.empty(ends.size)
    step = FOLLOW_BATCH if follower is not None else BATCH_WINDOWS
    for start in range(0, ends.size, step):
        chunk = slice(start, start + step)
        windows = gather(values, ends[chunk], window)
        result = follower.analyse(windows) if follower is not None else modes.analyse(engine, windows)
        scores[chunk], contributions[chunk] = result.scores, result.contributions
        mode[chunk], novelty[chunk] = result.mode, result.novelty
    return scores, contributions, mode, novelty


def _in_time_order(data: SensorData, ends: np.ndarray) -> np.ndarray:
    """Window ends ordered by the time of their last row (assets interleaved as they happened),
    so a drift follower sees the plant as the daemon would."""
    if data.timestamps is None or data.assets is None:
        return ends
    return ends[np.argsort(data.timestamps.asi8[ends], kind="stable")]


def _hop_ends(
    data: SensorData, ends: np.ndarray, stretch_start: np.ndarray, hop: int, config: dict[str, Any]
) -> np.ndarray:
    """The window ends a hop of `hop` keeps (memae_ts.detection.hop): on the clock with a time column,
    every `hop`-th row number without one. Each window is compared with the row before it (the
    data is sorted by asset, then time); `stretch_start` is moved in place from left-out
    windows to the next kept window of the asset."""
    from memae_ts.detection import hop as h

    ends = np.sort(ends)
    if data.timestamps is not None:
        times = h.to_microseconds(data.timestamps.as_unit("ns").asi8 / 1e9)
        interval = h.hop_interval_us(hop, h.model_period_seconds(config), "--hop")
    else:
        times, interval = np.asarray(data.row_numbers, dtype=np.int64), hop
    before = np.maximum(ends - 1, 0)
    previous = times[before]
    if data.assets is not None:
        previous = np.where(data.assets[before] == data.assets[ends], previous, h.NO_PREVIOUS)
    previous[ends == 0] = h.NO_PREVIOUS
    keep = h.hop_keep(times[ends], previous, interval)
    starts = stretch_start[ends].copy()
    stretch_start[ends] = False
    groups = [np.arange(len(ends))] if data.assets is None else _asset_groups(data.assets[ends])
    for members in groups:
        flags, _ = h.carry_starts(keep[members], starts[members], False)
        stretch_start[ends[members[keep[members]]]] = flags
    return ends[keep]


def _asset_groups(assets: np.ndarray) -> list[np.ndarray]:
    """Positions of each asset's entries (assets contiguous, as in sorted data)."""
    bounds = [0, *np.flatnonzero(assets[1:] != assets[:-1]) + 1, len(assets)]
    return [np.arange(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def score_rows(
    engine: Any,
    data: SensorData,
    *,
    max_gap_seconds: float | None,
    max_fill_rows: int,
    alarm_rule: AlarmRule | None = None,
    follower: Any = None,
    hop: int = 1,
) -> RowScores:
    """Scores of every row; with `alarm_rule`, the rule's alarms and episodes too, and the tail
    probability when the bundle has a tail model. A bundle with operating modes also gives each
    row's mode and novelty score; `follower` (memae_ts.detection.following.DriftFollower) lets the memory
    follow slow drift while scoring. `hop` = k scores every k-th window end per asset on the
    clock (memae_ts.detection.hop, as the edge daemon does); the other rows get no score, like warm-up."""
    from memae_ts.detection.modes import Modes

    bundle = engine.bundle
    window = bundle.window
    segments = segment(data, max_gap_seconds=max_gap_seconds, max_fill_rows=max_fill_rows)
    ends = window_ends(segments, window, 1)
    n, s = len(data), len(data.sensors)
    long_enough = segments.stops - segments.starts >= window
    stretch_start = np.zeros(n, dtype=bool)
    stretch_start[segments.starts[long_enough] + window - 1] = True
    if hop > 1:
        ends = _hop_ends(data, ends, stretch_start, hop, getattr(bundle, "config", None) or {})
    scores = np.full(n, np.nan)
    contributions = np.full((n, s), np.nan)
    modes = Modes.of(bundle)
    if modes is not None and not hasattr(engine, "analyse"):
        import warnings

        from memae_ts.io.data import DataWarning

        warnings.warn(
            f"the {getattr(engine, 'name', 'chosen')} engine cannot read out the memory: no mode and "
            "novelty_score columns (use --engine runtime, numpy or torch)",
            DataWarning,
            stacklevel=2,
        )
        modes = None
    mode = novelty = None
    if modes is None and follower is None:
        scores[ends], contributions[ends] = score_windows(engine, segments.values, ends, window)
    else:
        if follower is not None:
            ends = _in_time_order(data, ends)
        mode, novelty = np.full(n, np.nan), np.full(n, np.nan)
        scores[ends], contributions[ends], mode[ends], novelty[ends] = analyse_windows(
            engine, segments.values, ends, window, modes, follower
        )
    threshold = bundle.threshold
    result = RowScores(
        score=scores,
        normalised=scores / threshold,
        contributions=contributions,
        threshold=threshold,
        stretch_start=stretch_start,
    )
    if modes is not None:
        result.mode, result.novelty = mode, novelty / modes.novelty_threshold  # type: ignore[operator]
        result.combine = modes.combine
    config = getattr(bundle, "config", None) or {}
    if config.get("tail") is not None:
        from memae_ts.detection.tails import TailModel

        tail = TailModel.from_config(config["tail"])
        assert tail is not None
        result.tail_probability = tail.tail_probability(scores)
    if alarm_rule is not None:
        from memae_ts.detection.alarms import apply_alarms

        apply_alarms(data, result, alarm_rule)
    return result


def scores_frame(data: SensorData, result: RowScores) -> pd.DataFrame:
    """The table `memae-ts score` writes."""
    columns: dict[str, Any] = {}
    if data.timestamps is not None:
        columns["timestamp"] = data.timestamps.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(
            r"\.000000Z$", "Z", regex=True
        )
    else:
        columns["row"] = data.row_numbers
    if data.assets is not None:
        columns["asset"] = data.assets
    columns["score"] = result.score
    columns["normalised_score"] = result.normalised
    columns["is_anomaly"] = result.is_anomaly.astype(int)
    if result.alarm is not None:
        columns["alarm"] = result.alarm.astype(int)
    if result.tail_probability is not None:
        columns["tail_probability"] = result.tail_probability
    columns["top_sensors"] = result.top_sensors(data.sensors)
    if result.mode is not None and result.novelty is not None:  # a bundle with operating modes
        columns["mode"] = pd.array(np.where(result.mode >= 0, result.mode, np.nan), dtype="Int64")
        columns["novelty_score"] = result.novelty
    if data.labels is not None:
        columns["label"] = data.labels
    return pd.DataFrame(columns)
