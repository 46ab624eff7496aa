"""Windows never cross gaps, assets or long missing stretches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memae_ts.errors import DataError
from memae_ts.io.data import frame_to_sensor_data
from memae_ts.io.windows import default_max_gap_seconds, gather, require_windows, segment, window_ends


def _frame(n: int, period: str = "1min", start: str = "2026-01-01") -> pd.DataFrame:
    times = pd.date_range(start, periods=n, freq=period, tz="UTC")
    return pd.DataFrame(
        {
            "timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x": np.arange(n, dtype=float),
            "y": np.arange(n, dtype=float) * 2,
        }
    )


def test_time_gap_splits_series() -> None:
    frame = pd.concat([_frame(10), _frame(10, start="2026-01-02")], ignore_index=True)
    data = frame_to_sensor_data(frame)
    gap = default_max_gap_seconds(data)
    assert gap == pytest.approx(180.0)
    segments = segment(data, max_gap_seconds=gap, max_fill_rows=3)
    assert segments.starts.tolist() == [0, 10]
    assert segments.stops.tolist() == [10, 20]
    ends = window_ends(segments, 4, 1)
    assert ends.tolist() == [*range(3, 10), *range(13, 20)]
    windows = gather(segments.values, ends, 4)
    assert windows.shape == (14, 4, 2)
    # No window mixes the two days: each window's x values are consecutive.
    assert np.all(np.diff(windows[:, :, 0], axis=1) == 1)


def test_short_missing_filled_long_missing_splits() -> None:
    frame = _frame(30)
    frame.loc[5:6, "x"] = np.nan  # 2 rows: filled
    frame.loc[15:20, "y"] = np.nan  # 6 rows: split
    data = frame_to_sensor_data(frame)
    segments = segment(data, max_gap_seconds=180, max_fill_rows=3)
    assert segments.values[5, 0] == 4.0 and segments.values[6, 0] == 4.0  # forward-filled
    assert segments.starts.tolist() == [0, 21]
    assert segments.stops.tolist() == [18, 30]  # rows 15-17 filled, 18-20 missing
    ends = window_ends(segments, 5, 1)
    assert not np.any((ends >= 18) & (ends - 4 <= 20))


def test_windows_never_cross_assets() -> None:
    a, b = _frame(8), _frame(8)
    a["machine"], b["machine"] = "pump-1", "pump-2"
    b["x"] += 100
    data = frame_to_sensor_data(pd.concat([b, a], ignore_index=True), asset_column="machine")
    segments = segment(data, max_gap_seconds=180, max_fill_rows=0)
    ends = window_ends(segments, 3, 1)
    windows = gather(segments.values, ends, 3)
    assert len(ends) == 12
    assert np.all(np.diff(windows[:, :, 0], axis=1) == 1)


def test_stride_and_too_short() -> None:
    data = frame_to_sensor_data(_frame(20))
    segments = segment(data, max_gap_seconds=180, max_fill_rows=3)
    assert window_ends(segments, 5, 4).tolist() == [4, 8, 12, 16]
    ends = window_ends(segments, 25, 1)
    with pytest.raises(DataError, match=r"no complete window of 25 rows.*20 rows"):
        require_windows(data, segments, ends, 25)
