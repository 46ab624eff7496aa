"""The training range per sensor, stored in the bundle for the edge daemon's drift metric.

Why in the bundle: a reading outside every value the model learned from is extrapolation; the
daemon counts such readings per asset and sensor (``memae_ts_out_of_range_readings_total``,
docs/edge.md) and can only do so if the model says what it saw. Stored as
``training.sensor_range = {"min": [...], "max": [...]}`` in the bundle's sensor order, over the
rows the model learned normal operation from: the training rows (not the held-out validation
rows, not rows labelled anomalous, not rows with a missing value), the rows the scaler is fitted
on, the same for a whole and a streamed fit. Bundles fitted before it was stored have none: the
daemon reports the range as unknown instead of guessing.
"""

from __future__ import annotations

import numpy as np


def sensor_range_config(values: np.ndarray) -> dict[str, list[float | None]]:
    """Per column of ``values`` (NaN = missing), its min and max (None: no value at all)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError("values must be rows x sensors")
    known = ~np.isnan(values)
    has = known.any(axis=0).tolist()
    low = np.where(known, values, np.inf).min(axis=0, initial=np.inf).tolist()
    high = np.where(known, values, -np.inf).max(axis=0, initial=-np.inf).tolist()
    return {
        "min": [float(v) if h else None for v, h in zip(low, has, strict=True)],
        "max": [float(v) if h else None for v, h in zip(high, has, strict=True)],
    }


def outside_share(config: dict, sensors: list[str], values: np.ndarray) -> float | None:
    """Share of rows of ``values`` (the bundle's sensor order) with at least one sensor outside
    the bundle's training range; None when the bundle stores no range (fitted before it did)."""
    raw = (config.get("training") or {}).get("sensor_range")
    if not isinstance(raw, dict) or len(raw.get("min", ())) != len(sensors) or not len(values):
        return None
    low = np.array([np.nan if v is None else v for v in raw["min"]], dtype=np.float64)
    high = np.array([np.nan if v is None else v for v in raw["max"]], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        outside = (values < low) | (values > high)
    return float(outside.any(axis=1).mean())
