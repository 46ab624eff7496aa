"""From a sensor table to one score per timestamp.

The window ending at row t scores row t: the edge daemon can only score a window once its last
reading has arrived, so offline and live scores agree exactly. Rows before the first complete
window of a segment (warm-up) have no score (NaN).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from memae_ts.data import SensorData
from memae_ts.windows import gather, segment, window_ends

BATCH_WINDOWS = 2048
TOP_SENSORS = 3


@dataclass
class RowScores:
    """Per-row results aligned with a SensorData; NaN where no window ends."""

    score: np.ndarray
    normalised: np.ndarray
    contributions: np.ndarray
    threshold: float

    @property
    def is_anomaly(self) -> np.ndarray:
        return np.nan_to_num(self.normalised, nan=0.0) >= 1.0

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


def score_rows(
    engine: Any, data: SensorData, *, max_gap_seconds: float | None, max_fill_rows: int
) -> RowScores:
    bundle = engine.bundle
    window = bundle.window
    segments = segment(data, max_gap_seconds=max_gap_seconds, max_fill_rows=max_fill_rows)
    ends = window_ends(segments, window, 1)
    n, s = len(data), len(data.sensors)
    scores = np.full(n, np.nan)
    contributions = np.full((n, s), np.nan)
    scores[ends], contributions[ends] = score_windows(engine, segments.values, ends, window)
    threshold = bundle.threshold
    return RowScores(
        score=scores, normalised=scores / threshold, contributions=contributions, threshold=threshold
    )


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
    columns["top_sensors"] = result.top_sensors(data.sensors)
    if data.labels is not None:
        columns["label"] = data.labels
    return pd.DataFrame(columns)
