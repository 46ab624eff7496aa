"""SKAB: the memory as a second signal (novel-mode score) and drift following, measured.

Three parts, each printed as a table (docs/benchmarks.md, "Operating modes, novelty and drift
following" quotes them):

- `detect` (leaderboard protocol of bench/skab.py: one model per file on its first 400 rows,
  test part = the rest): which memory signal separates fault rows from normal rows — the
  novelty 1 − cos(z, read-out) or the addressing entropy — as ROC-AUC, each signal normalised
  by its own threshold calibrated on the model's held-out windows (quantile 0.995 × margin 1.5,
  the estimator's rule). Labels only count; they choose nothing. Also F1/FAR/MAR of the alarm
  rules "reconstruction" and "max" (either signal at 1), and how many modes each file got.
- `normal` (the label-free criterion that picks the default combine rule): fit on disjoint
  400-row chunks of anomaly-free.csv and count the share of the following 800 normal rows that
  alarm under each rule (a false-alarm rate on normal data only).
- `follow`: frozen memory against drift following. (a) anomaly-free setting: one model trained
  on anomaly-free.csv scores every file's test part; (b) leaderboard setting: false alarms on
  the normal rows after a file's first fault has ended. Each file starts from the trained memory
  (a reset), and windows are followed in time order in batches of 64 (memae_ts.detection.following).

Run:  .venv/bin/python bench/skab_modes.py --parts detect normal follow --epochs 30
      .venv/bin/python bench/skab_modes.py --parts follow --files valve1/0.csv valve1/1.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.run_options import add_run_options, apply_run_options  # noqa: E402
from bench.skab import DEFAULT_DATA, LABEL_COLUMNS, TRAIN_ROWS, labelled_files, read  # noqa: E402
from memae_ts.detection.threshold import calibrate, with_margin  # noqa: E402
from memae_ts.estimator import MemAE  # noqa: E402
from memae_ts.evaluation.metrics import evaluate  # noqa: E402
from memae_ts.io.data import DataWarning  # noqa: E402
from memae_ts.io.windows import gather  # noqa: E402


def fit(params: dict[str, Any], frame: pd.DataFrame) -> MemAE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # short training parts warn; expected
        return MemAE(**params).fit(frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame]))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by ranks (ties averaged); rows without a score are left out."""
    ok = np.isfinite(scores)
    y, s = labels[ok].astype(bool), scores[ok]
    if y.all() or not y.any():
        return float("nan")
    ranks = pd.Series(s).rank().to_numpy()
    return float((ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum()))


def signals(model: MemAE, frame: pd.DataFrame, follow: float = 0.0) -> dict[str, np.ndarray]:
    """Per row of `frame`: normalised reconstruction, novelty and addressing-entropy scores;
    `follow` > 0 follows drift at that rate, from the trained memory."""
    model.reset_memory()
    model.follow_drift = follow > 0
    model.follow_rate = follow or model.follow_rate
    model.__dict__.pop("follower_", None)  # a fresh follower with this rate
    data, result = model.score_rows(frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame]))
    assert len(data) == len(frame) and result.novelty is not None
    out = {"reconstruction": result.normalised, "novelty": result.novelty}
    if not follow:
        out["per-mode threshold"] = _per_mode(model, result.score, result.mode)
    if not follow:
        ends = np.flatnonzero(np.isfinite(result.score))
        attention = model.engine_.analyse(gather(data.values, ends, model.window))[2]
        entropy_rows = np.full(len(frame), np.nan)
        entropy_rows[ends] = (-attention * np.log(attention + 1e-12)).sum(-1).mean(-1)
        out["entropy"] = entropy_rows / _entropy_threshold(model, entropy_rows)
    return out


MIN_MODE_WINDOWS = 20  # held-out windows a mode needs for its own threshold


def _per_mode(model: MemAE, scores: np.ndarray, modes: np.ndarray | None) -> np.ndarray:
    """Scores normalised by a threshold per operating mode, each calibrated like the global one
    on the held-out windows of that mode (the global threshold for a mode with fewer than
    MIN_MODE_WINDOWS of them): the per-mode variant, measured here, not shipped."""
    assert modes is not None
    first = round(TRAIN_ROWS * (1 - model.validation_fraction)) + model.window - 1
    held = np.zeros(len(scores), dtype=bool)
    held[first:TRAIN_ROWS] = True
    thresholds = np.full(len(scores), float(model.threshold_))
    for mode in np.unique(modes[np.isfinite(modes)]):
        in_mode = modes == mode
        calib = scores[held & in_mode & np.isfinite(scores)]
        if calib.size >= MIN_MODE_WINDOWS:
            rule = calibrate(calib, model.threshold, model.threshold_quantile, model.pot_risk)
            thresholds[in_mode] = with_margin(rule, model.threshold_margin).value
    return scores / thresholds


def _entropy_threshold(model: MemAE, entropy_rows: np.ndarray) -> float:
    """Entropy's own threshold by the estimator's rule on the rows its validation split held out
    (the last validation_fraction of the training rows)."""
    first = round(TRAIN_ROWS * (1 - model.validation_fraction)) + model.window - 1
    held = entropy_rows[first:TRAIN_ROWS]
    held = held[np.isfinite(held)]
    rule = calibrate(held, model.threshold, model.threshold_quantile, model.pot_risk)
    return float(with_margin(rule, model.threshold_margin).value)


_FILE_MODELS: dict[str, MemAE] = {}


def file_model(root: str, name: str, params: dict[str, Any]) -> MemAE:
    """The leaderboard model of one file (its first 400 rows), fitted once for all parts."""
    if name not in _FILE_MODELS:
        _FILE_MODELS[name] = fit(params, read(root, name).iloc[:TRAIN_ROWS])
    return _FILE_MODELS[name]


def part_detect(root: str, files: Sequence[str], params: dict[str, Any]) -> None:
    rows: dict[str, list[np.ndarray]] = {
        "label": [], "reconstruction": [], "novelty": [], "entropy": [], "per-mode threshold": []
    }  # fmt: skip
    n_modes: list[int] = []
    for name in files:
        frame = read(root, name)
        model = file_model(root, name, params)
        n_modes.append(len(model.bundle_.config["modes"]["modes"]))
        sig = signals(model, frame)
        rows["label"].append(frame["anomaly"].to_numpy()[TRAIN_ROWS:])
        for key in ("reconstruction", "novelty", "entropy", "per-mode threshold"):
            rows[key].append(sig[key][TRAIN_ROWS:])
    pooled = {k: np.concatenate(v) for k, v in rows.items()}
    labels = pooled["label"].astype(np.int64)
    print(f"\n## detect: {len(files)} files, leaderboard protocol, test parts pooled ({labels.size} rows)")
    print(f"modes per file: {dict(zip(*np.unique(n_modes, return_counts=True), strict=True))}")
    print("| signal | ROC-AUC (fault vs normal rows) | normal rows >= 1 | fault rows >= 1 |")
    print("|---|---|---|---|")
    for key in ("reconstruction", "novelty", "entropy"):
        s = pooled[key]
        level = np.nan_to_num(s, nan=0.0) >= 1
        normal, fault = level[labels == 0].mean(), level[labels == 1].mean()
        print(f"| {key} | {auc(labels, s):.3f} | {normal:.3f} | {fault:.3f} |")
    print("| alarm rule | F1 | FAR % | MAR % |")
    print("|---|---|---|---|")
    rules = {
        "reconstruction": pooled["reconstruction"],
        "max(reconstruction, novelty)": np.fmax(pooled["reconstruction"], pooled["novelty"]),
        "max(reconstruction, entropy)": np.fmax(pooled["reconstruction"], pooled["entropy"]),
        "reconstruction, per-mode thresholds": pooled["per-mode threshold"],
    }
    for rule, s in rules.items():
        m = evaluate(labels, s, 1.0, nan_policy="normal")
        print(f"| {rule} | {m['f1']:.3f} | {100 * m['far']:.2f} | {100 * m['mar']:.2f} |")


def part_normal(root: str, params: dict[str, Any], chunks: int, later_rows: int = 800) -> None:
    frame = pd.read_csv(os.path.join(root, "anomaly-free", "anomaly-free.csv"), sep=";")
    span = TRAIN_ROWS + later_rows
    shares: dict[str, list[float]] = {"reconstruction": [], "max": [], "novelty": []}
    for i in range(min(chunks, (len(frame) - span) // TRAIN_ROWS + 1)):
        part = frame.iloc[i * TRAIN_ROWS : i * TRAIN_ROWS + span].reset_index(drop=True)
        model = fit(params, part.iloc[:TRAIN_ROWS])
        sig = signals(model, part)
        later = {k: np.nan_to_num(v[TRAIN_ROWS:], nan=0.0) for k, v in sig.items()}
        shares["reconstruction"].append(float(np.mean(later["reconstruction"] >= 1)))
        shares["novelty"].append(float(np.mean(later["novelty"] >= 1)))
        shares["max"].append(float(np.mean(np.fmax(later["reconstruction"], later["novelty"]) >= 1)))
    n = len(shares["max"])
    print(f"\n## normal: anomaly-free.csv, {n} chunks of {TRAIN_ROWS} rows + {later_rows} later")
    print("| alarm rule | share of later normal rows alarming (mean) | worst chunk |")
    print("|---|---|---|")
    for rule, v in shares.items():
        print(f"| {rule} | {np.mean(v):.4f} | {np.max(v):.4f} |")


def part_follow(root: str, files: Sequence[str], params: dict[str, Any], rates: Sequence[float]) -> None:
    free = pd.read_csv(os.path.join(root, "anomaly-free", "anomaly-free.csv"), sep=";")
    model = fit(params, free)
    memories = ["frozen", *(f"follow rate {r:g}" for r in rates)]
    table: dict[str, dict[str, list[np.ndarray]]] = {
        s: {k: [] for k in ["label", *memories]} for s in ("anomaly-free", "leaderboard")
    }
    drift: dict[str, list[float]] = {m: [] for m in memories[1:]}
    for name in files:
        frame = read(root, name)
        labels = frame["anomaly"].to_numpy()
        for setting in ("anomaly-free", "leaderboard"):
            m = model if setting == "anomaly-free" else file_model(root, name, params)
            scores = {"frozen": signals(m, frame)["reconstruction"]}
            for rate, memory in zip(rates, memories[1:], strict=True):
                scores[memory] = signals(m, frame, follow=rate)["reconstruction"]
                drift[memory].append(m.drift_["max"] if m.drift_ else 0.0)
            if setting == "leaderboard":  # normal rows after the first fault has ended
                faults = np.flatnonzero(labels[TRAIN_ROWS:] > 0)
                after = np.zeros(len(frame), dtype=bool)
                if faults.size:
                    first_end = TRAIN_ROWS + faults[0]
                    while first_end < len(frame) and labels[first_end] > 0:
                        first_end += 1
                    after[first_end:] = True
                keep = after & (labels == 0)
            else:
                keep = np.arange(len(frame)) >= TRAIN_ROWS
            table[setting]["label"].append(labels[keep])
            for memory in memories:
                table[setting][memory].append(scores[memory][keep])
    warmup = params["follow_warmup"]
    print(f"\n## follow: {len(files)} files, each from the trained memory (warm-up {warmup:g})")
    for memory, values in drift.items():
        print(f"{memory}: memory drift at the end of a file, median {np.median(values):.3f}, "
              f"max {np.max(values):.3f} of a slot's norm (cap 0.25)")  # fmt: skip
    print("| setting | memory | F1 | FAR % | MAR % |")
    print("|---|---|---|---|---|")
    for setting, cols in table.items():
        labels = np.concatenate(cols["label"]).astype(np.int64)
        for memory in memories:
            s = np.concatenate(cols[memory])
            if labels.any():
                m = evaluate(labels, s, 1.0, nan_policy="normal")
                f1, far, mar = f"{m['f1']:.3f}", f"{100 * m['far']:.2f}", f"{100 * m['mar']:.2f}"
            else:
                f1, far, mar = "-", f"{100 * float(np.mean(np.nan_to_num(s, nan=0.0) >= 1)):.2f}", "-"
                setting = "leaderboard (normal rows after the first fault)"
            print(f"| {setting} | {memory} | {f1} | {far} | {mar} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--parts", nargs="+", default=["detect", "normal", "follow"])
    p.add_argument("--files", nargs="*", default=[])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--chunks", type=int, default=5, help="anomaly-free chunks of the `normal` part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--follow-rates", type=float, nargs="+", default=[0.001, 0.01])
    p.add_argument("--follow-warmup", type=float, default=100.0)
    add_run_options(p)
    args = p.parse_args(argv)
    apply_run_options(args)
    params = {"epochs": args.epochs, "seed": args.seed, "follow_warmup": args.follow_warmup}
    files = labelled_files(args.data, args.files)
    t0, c0 = time.perf_counter(), time.process_time()
    if "detect" in args.parts:
        part_detect(args.data, files, params)
    if "normal" in args.parts:
        part_normal(args.data, params, args.chunks)
    if "follow" in args.parts:
        part_follow(args.data, files, params, args.follow_rates)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n(wall {wall:.0f} s, CPU {cpu:.0f} s; epochs {args.epochs}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
