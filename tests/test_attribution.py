"""Attribution checked: is the top sensor of a fault's alarm episode the sensor the fault was
injected into?

The demo plant (memae_ts.io.demo_data) injects each fault into known sensors: a bearing drift into
bearing_temp_c (with a small vibration share), a stuck pressure transmitter into
discharge_pressure_bar, a vibration burst into vibration_mm_s, and a clogged strainer into
flow, suction pressure and motor current together. Episodes come from the causal alarm rule
(memae_ts.detection.alarms) as `memae-ts score --episodes` reports them; an episode belongs to the fault
whose rows (and the windows that still hold them) it overlaps most. Goal of issue 15: the top
sensor is an injected one in at least 80 % of fault episodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memae_ts.io.demo_data import FAULTS, generate

INJECTED = {
    "bearing_drift": {"bearing_temp_c", "vibration_mm_s"},
    "stuck_pressure": {"discharge_pressure_bar"},
    "vibration_burst": {"vibration_mm_s"},
    "clogged_strainer": {"flow_m3h", "suction_pressure_bar", "motor_current_a"},
}
LIVE_SEEDS = (2, 3, 4, 5, 6, 7)  # six 4-day files, four faults each, 300 s sampling like the fixture


def fault_spans(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, labels.astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def test_top_sensor_of_fault_episodes_is_the_injected_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    from memae_ts.detection.alarms import AlarmRule, apply_alarms
    from memae_ts.estimator import load

    model = load(tiny_model_dir, engine="numpy")
    window = model.bundle_.window
    judged: list[tuple[str, str, bool]] = []  # (fault, top sensor, correct)
    faults_seen = 0
    for seed in LIVE_SEEDS:
        path = tmp_path / f"live{seed}.csv"
        generate(days=4, period_seconds=300, seed=seed, faults=True).to_csv(path, index=False)
        data, result = model.score_rows(str(path), label_column="anomaly")
        assert data.labels is not None and data.timestamps is not None
        apply_alarms(data, result, AlarmRule())
        seconds = data.timestamps.as_unit("ns").asi8 / 1e9
        spans = fault_spans(data.labels)
        assert len(spans) == len(FAULTS)  # injected in FAULTS order, never overlapping
        faults_seen += len(spans)
        for episode in result.episodes:
            overlaps = []
            for start, stop in spans:
                # The fault's rows and the windows after it that still hold fault rows.
                lo, hi = seconds[start], seconds[min(stop + window - 1, len(seconds)) - 1]
                overlaps.append(max(0.0, min(episode.end, hi) - max(episode.start, lo)))
            if max(overlaps) <= 0:
                continue  # a false alarm, not a fault episode
            fault = FAULTS[int(np.argmax(overlaps))]
            top = episode.top_sensors(data.sensors, k=1)[0][0]
            judged.append((fault, top, top in INJECTED[fault]))
    share = np.mean([ok for _, _, ok in judged]) if judged else 0.0
    report = ", ".join(f"{fault}->{top}{'' if ok else ' (wrong)'}" for fault, top, ok in judged)
    # Enough fault episodes for the share to mean something, then the goal.
    assert len(judged) >= 10, f"only {len(judged)} fault episodes over {faults_seen} faults: {report}"
    assert share >= 0.8, f"top sensor right in {share:.0%} of {len(judged)} fault episodes: {report}"
