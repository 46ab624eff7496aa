"""A realistic, deterministic plant data set: a centrifugal pump with correlated sensors.

Physics, roughly: flow ∝ speed, head (pressure) ∝ speed², shaft power and motor current ∝ speed³
plus load, winding and bearing temperatures follow power through first-order lags on top of a
daily ambient cycle, vibration grows with speed. The operator switches between operating
modes (full, reduced, idle). Faults are injected with labels so evaluation has ground truth:
a bearing-temperature drift, a stuck pressure transmitter, a vibration spike burst and a
clogged strainer that breaks the flow/pressure/current relation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SENSORS = [
    "motor_speed_rpm",
    "flow_m3h",
    "discharge_pressure_bar",
    "suction_pressure_bar",
    "motor_current_a",
    "vibration_mm_s",
    "bearing_temp_c",
    "winding_temp_c",
]
FAULTS = ("bearing_drift", "stuck_pressure", "vibration_burst", "clogged_strainer")
MODES_RPM = (1480.0, 1180.0, 900.0)


def _lag(signal: np.ndarray, steps: float, start: float) -> np.ndarray:
    out = np.empty_like(signal)
    alpha = 1.0 / steps
    value = start
    for i, target in enumerate(signal):
        value += alpha * (target - value)
        out[i] = value
    return out


def generate(
    *,
    days: float = 7.0,
    period_seconds: int = 60,
    seed: int = 0,
    faults: bool = True,
    start: str = "2026-11-01T00:00:00Z",
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(days * 86400 / period_seconds)
    t = np.arange(n)
    hours = t * period_seconds / 3600.0

    # Operating schedule: mode changes every 2-10 hours, ramped over a few minutes.
    setpoint = np.empty(n)
    i = 0
    while i < n:
        length = int(rng.uniform(2, 10) * 3600 / period_seconds)
        setpoint[i : i + length] = rng.choice(MODES_RPM, p=[0.5, 0.35, 0.15])
        i += length
    speed = _lag(setpoint, max(2.0, 300 / period_seconds), setpoint[0]) + rng.normal(0, 3, n)
    rel = speed / MODES_RPM[0]
    ambient = 22 + 4 * np.sin(2 * np.pi * (hours - 9) / 24) + rng.normal(0, 0.1, n).cumsum() * 0.01
    flow = 120 * rel * (1 + rng.normal(0, 0.01, n))
    suction = 1.2 + 0.05 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.01, n)
    discharge = suction + 6.5 * rel**2 * (1 + rng.normal(0, 0.01, n))
    power = 45 * rel**3
    current = 18 + 1.1 * power + rng.normal(0, 0.4, n)
    vibration = 1.2 + 2.0 * rel**2 + np.abs(rng.normal(0, 0.12, n))
    bearing = _lag(ambient + 0.55 * power, 30 * 60 / period_seconds, ambient[0] + 20) + rng.normal(0, 0.15, n)
    winding = _lag(ambient + 1.1 * power, 15 * 60 / period_seconds, ambient[0] + 40) + rng.normal(0, 0.2, n)
    values = {
        "motor_speed_rpm": speed,
        "flow_m3h": flow,
        "discharge_pressure_bar": discharge,
        "suction_pressure_bar": suction,
        "motor_current_a": current,
        "vibration_mm_s": vibration,
        "bearing_temp_c": bearing,
        "winding_temp_c": winding,
    }
    label = np.zeros(n, dtype=np.int8)
    if faults:
        _inject_faults(values, label, rng, period_seconds)
    times = pd.date_range(pd.Timestamp(start), periods=n, freq=f"{period_seconds}s")
    frame = pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for name in SENSORS:
        frame[name] = np.round(values[name], 4)
    frame["anomaly"] = label
    return frame


def _inject_faults(
    values: dict[str, np.ndarray], label: np.ndarray, rng: np.random.Generator, period: int
) -> None:
    n = label.size
    per_hour = 3600 // period
    slots = np.linspace(0.15, 0.85, len(FAULTS)) * n
    for fault, centre in zip(FAULTS, slots.astype(int), strict=True):
        start = int(centre + rng.integers(-per_hour, per_hour))
        if fault == "bearing_drift":
            length = 6 * per_hour
            stop = min(n, start + length)
            ramp = np.linspace(0, 9.0, stop - start)
            values["bearing_temp_c"][start:stop] += ramp
            values["vibration_mm_s"][start:stop] += ramp * 0.06
        elif fault == "stuck_pressure":
            length = 3 * per_hour
            stop = min(n, start + length)
            values["discharge_pressure_bar"][start:stop] = values["discharge_pressure_bar"][start]
        elif fault == "vibration_burst":
            length = max(20, per_hour // 2)
            stop = min(n, start + length)
            burst = rng.random(stop - start) < 0.5
            values["vibration_mm_s"][start:stop] += burst * rng.uniform(3, 8, stop - start)
        else:  # clogged strainer: flow and suction fall, current falls, speed unchanged
            length = 4 * per_hour
            stop = min(n, start + length)
            severity = np.minimum(1.0, np.linspace(0, 2.0, stop - start))
            values["flow_m3h"][start:stop] *= 1 - 0.25 * severity
            values["suction_pressure_bar"][start:stop] -= 0.35 * severity
            values["motor_current_a"][start:stop] -= 4.0 * severity
        label[start:stop] = 1


def generate_fleet(
    *,
    assets: int = 3,
    days: float = 7.0,
    period_seconds: int = 60,
    seed: int = 0,
    faults: bool = True,
    start: str = "2026-11-01T00:00:00Z",
) -> pd.DataFrame:
    """Several pumps in one file, as a historian export of a plant looks: an `asset` column, each
    pump its own schedule and faults (seed + i), a two-hour historian outage per pump (rows
    missing, at a different time for each) and a few empty cells (dropped readings).

    Why the mess: a file with one clean machine hides the problems that matter on a real plant —
    lines drawn from one machine into the next, windows across an outage, silently filled cells.
    """
    if assets < 1:
        raise ValueError(f"assets must be >= 1, got {assets}")
    rng = np.random.default_rng(seed + 1000)
    frames = []
    for i in range(assets):
        frame = generate(days=days, period_seconds=period_seconds, seed=seed + i, faults=faults, start=start)
        n = len(frame)
        outage = 2 * 3600 // period_seconds
        at = int(n * (0.5 + 0.05 * i)) % max(1, n - outage)
        frame = frame.drop(index=range(at, min(n, at + outage)))
        cells = rng.random((len(frame), len(SENSORS))) < 0.002
        for j, name in enumerate(SENSORS):
            frame.loc[cells[:, j], name] = np.nan
        frame.insert(1, "asset", f"pump-{i + 1}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
