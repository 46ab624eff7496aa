"""Durations as users write them: `90`, `90s`, `5min`, `2h` (one parser for every option)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from memae_ts.errors import DataError


def duration_seconds(value: float | str | None, option: str) -> float | None:
    """'90', 90, '90s', '5min', '2h' → seconds; a bare number is seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            seconds = pd.Timedelta(str(value)).total_seconds()
        except ValueError as exc:
            raise DataError(f"{option}: cannot read {value!r} as a duration (e.g. 30s, 5min, 2h)") from exc
    if not seconds > 0 or not np.isfinite(seconds):
        raise DataError(f"{option} must be a positive duration, got {value!r}")
    return seconds
