"""A SensorData put on a regular time grid, asset by asset (`--resample`).

Why: historians store by exception, so a raw export has a row only when some value changed and
the gap rule would cut it into pieces too short for a window. `memae_ts.io.resample` holds the
grid rules (the same ones the edge daemon applies live); this module applies them to a loaded
table, keeps labels and line numbers pointing at the reading each grid row came from, and puts
the counts of what was held, interpolated or left missing into the summary.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from memae_ts.errors import DataError
from memae_ts.io.data import SensorData, asset_rows
from memae_ts.io.durations import duration_seconds
from memae_ts.io.resample import ResampleSpec, resample_series


def make_spec(period: float | str, method: str, limit: float | str | None) -> ResampleSpec:
    if method not in ("hold", "interpolate"):
        raise DataError(f"--resample-method must be 'hold' or 'interpolate', got {method!r}")
    seconds = duration_seconds(period, "--resample")
    assert seconds is not None
    limit_seconds = duration_seconds(limit, "--resample-limit")
    if limit_seconds is not None and limit_seconds < seconds:
        raise DataError(f"--resample-limit ({limit_seconds:g} s) must be at least the period ({seconds:g} s)")
    return ResampleSpec(period_seconds=seconds, method=method, limit_seconds=limit_seconds)


def resample_data(data: SensorData, spec: ResampleSpec) -> SensorData:
    """Every asset's rows on the grid; each grid row keeps the line, label and position of the
    newest reading at or before its time."""
    if data.timestamps is None:
        raise DataError(f"{data.source}: --resample needs a time column")
    times = data.timestamps.as_unit("ns").asi8
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    held = np.zeros(len(data.sensors), dtype=np.int64)
    missing = np.zeros(len(data.sensors), dtype=np.int64)
    grid_rows = 0
    for rows in asset_rows(data):
        invalid = None if data.invalid is None else data.invalid[rows]
        grid_ns, values, source, stats = resample_series(times[rows], data.values[rows], spec, invalid)
        parts.append((grid_ns, values, rows[source], np.full(len(grid_ns), rows[0])))
        held += stats.held_cells
        missing += stats.missing_cells
        grid_rows += stats.grid_rows
    if grid_rows == 0:
        raise DataError(
            f"{data.source}: no grid point of {spec.describe()} falls inside the data's time range"
        )
    grid_ns = np.concatenate([p[0] for p in parts])
    source_rows = np.concatenate([p[2] for p in parts])
    summary = replace(data.summary)
    summary.resample = {
        **spec.to_config(),
        "description": (
            f"{spec.describe()}: {len(data)} readings -> {grid_rows} grid rows; "
            + ", ".join(
                f"{name} {int(h)} {'interpolated' if spec.method == 'interpolate' else 'held'}"
                f"/{int(m)} missing"
                for name, h, m in zip(data.sensors, held, missing, strict=True)
            )
        ),
        "grid_rows": grid_rows,
        "held_cells": {s: int(h) for s, h in zip(data.sensors, held, strict=True)},
        "missing_cells": {s: int(m) for s, m in zip(data.sensors, missing, strict=True)},
    }
    return replace(
        data,
        values=np.concatenate([p[1] for p in parts]),
        timestamps=pd.DatetimeIndex(pd.to_datetime(grid_ns, unit="ns", utc=True)),
        assets=None if data.assets is None else data.assets[source_rows],
        labels=None if data.labels is None else data.labels[source_rows],
        changepoints=None if data.changepoints is None else data.changepoints[source_rows],
        invalid=np.zeros((grid_rows, len(data.sensors)), dtype=bool),
        positions=None if data.positions is None else data.positions[source_rows],
        row_numbers=data.row_numbers[source_rows],
        summary=summary,
    )
