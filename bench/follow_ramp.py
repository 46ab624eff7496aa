"""Drift following on the demo pump: a slow bearing-temperature ramp (the boiling frog).

A model is fitted on 6 fault-free days of `memae_ts.io.demo_data` (5 min sampling, window 32, 50
slots, 10 epochs, seed 3); another fault-free 6 days (seed 7) get a ramp on `bearing_temp_c`
from day 1 to the end, adding +5, +10 or +20 °C. Printed per ramp and memory (frozen, following
at the default rate 0.001, at 0.01, and at 0.01 without the bounds: learning up to the
threshold, no cap on total drift): the share of the ramp's last tenth that alarms, where in the
ramp the first alarm falls (fraction of the ramp), the alarm share before the ramp, and the
largest slot drift at the end. docs/benchmarks.md quotes it.

Run:  .venv/bin/python bench/follow_ramp.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from memae_ts.estimator import MemAE  # noqa: E402
from memae_ts.io.demo_data import generate  # noqa: E402

MEMORIES = {
    "frozen": None,
    "follow (default rate 0.001)": {},
    "follow rate 0.01": {"follow_rate": 0.01},
    "follow rate 0.01, no bounds": {"follow_rate": 0.01, "follow_max_drift": 100.0, "follow_below": 1.0},
}


def main() -> int:
    t0, c0 = time.perf_counter(), time.process_time()
    warnings.simplefilter("ignore")
    history = generate(days=6, period_seconds=300, seed=1, faults=False)
    params = {"epochs": 10, "patience": 5, "batch_size": 32, "learning_rate": 3e-3, "seed": 3}
    model = MemAE(**params, window=32, memory_slots=50)
    model.fit(history)
    live = generate(days=6, period_seconds=300, seed=7, faults=False)
    n = len(live)
    start = n // 6
    print("| ramp | memory | last tenth alarming | first alarm (share of ramp) | before the ramp | drift |")
    print("|---|---|---|---|---|---|")
    for amplitude in (5.0, 10.0, 20.0):
        frame = live.copy()
        frame["bearing_temp_c"] += np.clip((np.arange(n) - start) / (n - start), 0, None) * amplitude
        for name, settings in MEMORIES.items():
            model.reset_memory()
            model.__dict__.pop("follower_", None)
            model.follow_drift = settings is not None
            defaults = {"follow_rate": 0.001, "follow_max_drift": 0.25, "follow_below": 0.5}
            for key, value in {**defaults, **(settings or {})}.items():
                setattr(model, key, value)
            _, result = model.score_rows(frame)
            level = np.nan_to_num(result.normalised, nan=0.0)
            alarms = np.flatnonzero(level[start:] >= 1)
            first = f"{alarms[0] / (n - start):.2f}" if alarms.size else "none"
            drift = model.drift_["max"] if model.drift_ else 0.0
            print(
                f"| +{amplitude:g} | {name} | {np.mean(level[-n // 10 :] >= 1):.3f} | {first} | "
                f"{np.mean(level[:start] >= 1):.3f} | {drift:.3f} |"
            )
    print(f"\n(wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
