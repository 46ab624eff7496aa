"""Alarm rule defaults and budget thresholds, measured on NORMAL data only (no test label).

What an alarm rule does to normal operation is what decides whether an operator keeps trusting
the tool: every alarm on normal data is a false alarm. So the rule's defaults and the choice
between the fixed margin and a false-alarm budget are measured here on data known to be
normal, never on labelled faults:

1. SKAB ``anomaly-free/anomaly-free.csv`` (1 s sampling, 2.6 h), leaderboard-like: the file is
   cut into chunks of 1200 rows; a MemAE with the library defaults is fitted on a chunk's first
   400 rows (as SKAB's protocol trains on 400) and scores its next 800 rows, which are normal.
2. The demo plant (memae_ts.io.demo_data): fitted on 7 normal days (seed 1), scoring 7 fresh
   normal days (seed 2).

For each candidate rule (raw per-window threshold, k of n, clear level, minimum windows) on the
same scores: episodes per 1000 windows and the share of windows with the alarm on (on normal
data both are false alarms), and the fewest windows the rule needs to raise an alarm (k: the
price in detection delay, also label-free).

3. Budget against margin: on SKAB's anomaly-free file fitted whole (first 60 %, so the budget
   has a calibration slice; 400 rows leave it 8 windows) and on the demo plant, the realised
   episode rate on the fresh normal part of the margin default (quantile 0.995 × 1.5) and of a
   false-alarm budget, beside what each model's calibration report said to expect.

Run:  .venv/bin/python bench/alarm_rule.py [--epochs N] [--json out.json]
Absolute numbers depend on the seed; the ratios between rules on the same scores do not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from memae_ts.detection.alarms import AlarmRule, apply_rule  # noqa: E402
from memae_ts.estimator import MemAE  # noqa: E402

SKAB_FREE = os.path.join(REPO, "..", "shared", "data", "SKAB", "data", "anomaly-free", "anomaly-free.csv")
RULES: dict[str, AlarmRule] = {
    "raw (1 of 1)": AlarmRule.raw(),
    "2 of 3": AlarmRule(k=2, n=3, clear_level=1.0, min_windows=1),
    "3 of 5": AlarmRule(k=3, n=5, clear_level=1.0, min_windows=1),
    "3 of 5, min 5": AlarmRule(k=3, n=5, clear_level=1.0, min_windows=5),
    "3 of 5, clear 0.9, min 5 (default)": AlarmRule(),
    "3 of 5, clear 0.8": AlarmRule(k=3, n=5, clear_level=0.8, min_windows=1),
    "3 of 5, clear 0.8, min 5": AlarmRule(k=3, n=5, clear_level=0.8, min_windows=5),
    "5 of 10, clear 0.8, min 10": AlarmRule(k=5, n=10, clear_level=0.8, min_windows=10),
}


def rule_table(parts: list[np.ndarray]) -> list[dict[str, Any]]:
    """Each rule over each part's normalised scores (a part = one series, in time order)."""
    rows = []
    windows = int(sum(np.isfinite(p).sum() for p in parts))
    for name, rule in RULES.items():
        episodes = alarmed = 0
        for p in parts:
            alarm, eps = apply_rule(p, rule)
            episodes += len(eps)
            alarmed += int(alarm.sum())
        rows.append(
            {
                "rule": name,
                "episodes_per_1000_windows": 1000 * episodes / windows,
                "alarmed_share": alarmed / windows,
                "windows_to_raise": rule.k,
                "episodes": episodes,
                "windows": windows,
            }
        )
    return rows


def fit(frame: pd.DataFrame, **params: Any) -> MemAE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MemAE(**params).fit(frame)


def skab_chunks(epochs: int | None) -> list[np.ndarray]:
    frame = pd.read_csv(SKAB_FREE, sep=";")
    parts = []
    extra = {} if epochs is None else {"epochs": epochs}
    for lo in range(0, len(frame) - 1199, 1200):
        chunk = frame.iloc[lo : lo + 1200].reset_index(drop=True)
        model = fit(chunk.iloc[:400], **extra)
        normalised = model.normalised_scores(chunk)[400:]
        parts.append(normalised)
        print(f"  SKAB chunk {lo}: threshold {model.threshold_:.4g}", flush=True)
    return parts


def budget_against_margin(
    name: str, train: pd.DataFrame, fresh: pd.DataFrame, budget: dict[str, float], epochs: int | None
) -> list[dict[str, Any]]:
    """Realised episodes (default rule) on fresh normal data: margin default and the budget."""
    out = []
    extra = {} if epochs is None else {"epochs": epochs}
    for label, params in (("margin 1.5 (default)", {}), (f"budget {budget}", budget)):
        model = fit(train, **extra, **params)
        scores = model.normalised_scores(fresh)
        _, episodes = apply_rule(scores, model.alarm_rule_)
        windows = int(np.isfinite(scores).sum())
        expected = model.bundle_.config["threshold"].get("expected") or {}
        out.append(
            {
                "data": name,
                "threshold": label,
                "realised_episodes_per_1000_windows": 1000 * len(episodes) / windows,
                "expected_episodes_per_1000_windows": expected.get("episodes_per_1000_windows"),
                "expected_by": expected.get("estimated_by"),
                "found_by": model.bundle_.config["threshold"].get("found_by"),
                "windows": windows,
                "episodes": len(episodes),
                "alarmed_share": float(np.mean(np.nan_to_num(scores) >= 1.0)),
            }
        )
        print(f"  {name} {label}: {out[-1]}", flush=True)
    return out


def main() -> int:
    from memae_ts.io.demo_data import generate

    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--epochs", type=int, help="cap the epochs (default: the library default)")
    parser.add_argument("--json", help="write the tables to this file")
    parser.add_argument("--sections", default="123", help="which of the three to run (default 123)")
    parser.add_argument("--cache", help="keep the normal scores of 1 and 2 in this .npz (rules re-counted)")
    args = parser.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    results: dict[str, Any] = {}

    history = generate(days=7, seed=1, faults=False)
    fresh = generate(days=7, seed=2, faults=False)
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    cached: dict[str, Any] = dict(np.load(args.cache)) if args.cache and os.path.exists(args.cache) else {}
    if "1" in args.sections:
        print("1. SKAB anomaly-free, 400-row fits, next 800 rows", flush=True)
        parts = [cached[k] for k in sorted(cached) if k.startswith("skab")] or skab_chunks(args.epochs)
        cached.update({f"skab{i:02d}": p for i, p in enumerate(parts)})
        results["skab_rules"] = rule_table(parts)
    if "2" in args.sections:
        print("2. demo plant, 7 normal days fitted, 7 fresh normal days", flush=True)
        if "demo" not in cached:
            cached["demo"] = fit(history, **extra).normalised_scores(fresh)
        results["demo_rules"] = rule_table([cached["demo"]])
    if args.cache:
        np.savez(args.cache, **cached)
    if "3" in args.sections:
        print("3. budget against margin on fresh normal data", flush=True)
        skab = pd.read_csv(SKAB_FREE, sep=";")
        cut = int(len(skab) * 0.6)
        results["budget"] = budget_against_margin(
            "SKAB anomaly-free (60 % fitted)", skab.iloc[:cut], skab.iloc[cut:],
            {"false_alarms_per_1000_windows": 1.0}, args.epochs,
        ) + budget_against_margin(
            "demo plant (7 days fitted)", history, fresh, {"false_alarms_per_day": 1.0}, args.epochs,
        )  # fmt: skip

    for key in ("skab_rules", "demo_rules", "budget"):
        if key in results:
            print(f"\n{key}")
            print(pd.DataFrame(results[key]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
