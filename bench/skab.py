"""SKAB benchmark (Skoltech Anomaly Benchmark) with the published leaderboard protocol.

Protocol (README of waico/SKAB, restated in ../shared/data/README.md): each of the 34 labelled
files is handled on its own; its first 400 rows train the model (assumed normal), the remaining
rows are the test part; confusion counts are summed over all 34 test parts and F1, FAR and MAR
computed from the pooled counts, point-wise, no point adjustment.

How memae-ts fits in, and why:
- `MemAE(**defaults)` is fitted on the 400 training rows exactly as `memae-ts fit` would: the
  estimator's own scaler, validation split and threshold rule. No test label is used for
  anything but the final counts; nothing is tuned per file.
- The whole file is then scored and the test rows (400 onwards) are evaluated. The window that
  ends at a test row may reach back into the training rows: a deployed detector has seen the
  minutes before, so the first test rows are scored like any other. Rows left without a score
  (after a logging gap the window must refill) are counted as "normal" (no alarm), so every
  test row of the leaderboard is counted.
- Per-file scores are pooled as normalised scores (score / that file's threshold, alarm at 1.0).

Printed per variant: the headline (each window decides the row it ends at, as the edge does);
two extras, whole files (training rows counted too) and the leaderboard Conv-AE's look-ahead
rule (a row alarms only when every window containing it does; bench/skab_conv_ae.py re-runs
that detector for the like-for-like comparison); and the changepoint view, NAB standard / low
FP / low FN (memae_ts.nab) for both rules.

A second, more realistic setting ("anomaly-free"): one model is trained on
`anomaly-free/anomaly-free.csv` and applied unchanged to the test part of every file.

Run:  .venv/bin/python bench/skab.py            (all variants, ~minutes on 2 cores)
      .venv/bin/python bench/skab.py --variants memae --files valve1/0.csv --epochs 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.run_options import add_run_options, apply_run_options  # noqa: E402
from memae_ts.data import DataWarning  # noqa: E402
from memae_ts.estimator import MemAE  # noqa: E402
from memae_ts.metrics import evaluate  # noqa: E402
from memae_ts.nab import events_of, nab  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "SKAB", "data")
TRAIN_ROWS = 400
LABEL_COLUMNS = ("anomaly", "changepoint")
GROUPS = ("valve1", "valve2", "other")

# Published leaderboard (outlier detection): F1, FAR %, MAR %.
LEADERBOARD: list[tuple[str, float, float, float]] = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.6),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation Forest", 0.29, 2.56, 82.89),
]

# The ablation: the same estimator with its defaults, memory off, sparsity off.
VARIANTS: dict[str, dict[str, Any]] = {
    "memae": {},
    "ae": {"use_memory": False},
    "memae_nosparse": {"shrink_threshold": 0.0, "entropy_weight": 0.0},
}

log = logging.getLogger("bench.skab")


@dataclass
class FileResult:
    name: str
    full_scores: np.ndarray  # every row of the file, NaN where unscored
    full_labels: np.ndarray
    threshold: float
    times: np.ndarray  # every row, seconds since the epoch (for the changepoint score)
    changepoints: np.ndarray  # every row, SKAB's `changepoint` label

    def row_scores(self, lookahead_window: int | None = None) -> np.ndarray:
        """Every row's normalised score (alarm at 1), under the look-ahead rule when given its
        window (see `every_covering_window`)."""
        normalised = self.full_scores / self.threshold
        return normalised if lookahead_window is None else every_covering_window(normalised, lookahead_window)


def labelled_files(root: str, only: Sequence[str] = ()) -> list[str]:
    """The 34 labelled files as 'group/name.csv', in a stable order."""
    names: list[str] = []
    for group in GROUPS:
        folder = os.path.join(root, group)
        files = sorted(os.listdir(folder), key=lambda f: (len(f), f))
        names += [f"{group}/{f}" for f in files if f.endswith(".csv")]
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise SystemExit(f"unknown SKAB file(s) {missing}; known: {names}")
        names = [n for n in names if n in only]
    return names


def read(root: str, name: str) -> pd.DataFrame:
    return pd.read_csv(os.path.join(root, name), sep=";")


def epoch_seconds(frame: pd.DataFrame) -> np.ndarray:
    """The `datetime` column as seconds since the epoch (what the changepoint score takes)."""
    return pd.to_datetime(frame["datetime"]).to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9


def fit_model(params: dict[str, Any], frame: pd.DataFrame) -> MemAE:
    with warnings.catch_warnings():
        # Short training parts make the estimator warn (few held-out windows); expected here.
        warnings.simplefilter("ignore", DataWarning)
        return MemAE(**params).fit(frame)


def score_file(model: MemAE, frame: pd.DataFrame, name: str) -> FileResult:
    scores = model.score_samples(frame.drop(columns=list(LABEL_COLUMNS)))
    return FileResult(
        name=name,
        full_scores=scores,
        full_labels=frame["anomaly"].to_numpy().astype(np.int64),
        threshold=float(model.threshold_),
        times=epoch_seconds(frame),
        changepoints=frame["changepoint"].to_numpy().astype(np.int64),
    )


def pooled(
    results: Sequence[FileResult], whole_file: bool = False, lookahead_window: int | None = None
) -> dict[str, Any]:
    """Pooled metrics over the test parts; `whole_file` also counts the training rows, and
    `lookahead_window` applies the look-ahead rule (`every_covering_window`). Rows without a
    score count as no alarm.

    The whole-file figure is an extra that flatters FAR (the first 400 rows are almost all true
    negatives). The published leaderboard rows are test-part counts: bench/skab_conv_ae.py
    re-runs the leaderboard's Conv-AE and matches its row only when counting test parts.
    """
    first = 0 if whole_file else TRAIN_ROWS
    labels = np.concatenate([r.full_labels[first:] for r in results])
    scores = np.concatenate([r.row_scores(lookahead_window)[first:] for r in results])
    return evaluate(labels, scores, 1.0, nan_policy="normal")


def every_covering_window(normalised: np.ndarray, window: int) -> np.ndarray:
    """Per row, the lowest normalised score of the windows containing it (those ending at rows
    i .. i+window-1); NaN when one of them is missing (warm-up, gap, end of file).

    At level 1 this is the leaderboard Conv-AE's decision (a row alarms only when every window
    covering it does), so it is the like-for-like comparison with its published row. It waits
    window-1 rows for the future, so the edge daemon cannot use it: an extra, never the headline.
    """
    out = np.full(normalised.size, np.nan)
    if normalised.size >= window:
        covering = np.lib.stride_tricks.sliding_window_view(normalised, window)
        out[: covering.shape[0]] = covering.min(axis=1)  # NaN propagates: a missing window
    return out


def changepoint_scores(results: Sequence[FileResult], window: int | None = None) -> dict[str, float]:
    """NAB scores (memae_ts.nab) of the test parts' alarms; `window` applies the look-ahead rule."""
    series = []
    for r in results:
        alarms = np.nan_to_num(r.row_scores(window), nan=0.0)[TRAIN_ROWS:] >= 1.0
        series.append(events_of(r.times[TRAIN_ROWS:], r.changepoints[TRAIN_ROWS:], alarms))
    return nab(series)


def run_leaderboard(root: str, files: Sequence[str], params: dict[str, Any]) -> list[FileResult]:
    out: list[FileResult] = []
    for name in files:
        frame = read(root, name)
        model = fit_model(params, frame.iloc[:TRAIN_ROWS].drop(columns=list(LABEL_COLUMNS)))
        out.append(score_file(model, frame, name))
        log.info("%s: threshold %.4g", name, model.threshold_)
    return out


def run_anomaly_free(root: str, files: Sequence[str], params: dict[str, Any]) -> list[FileResult]:
    model = fit_model(params, pd.read_csv(os.path.join(root, "anomaly-free", "anomaly-free.csv"), sep=";"))
    return [score_file(model, read(root, name), name) for name in files]


def _fmt(metrics: dict[str, Any]) -> str:
    return (
        f"F1 {metrics['f1']:.3f}  FAR {100 * metrics['far']:6.2f} %  MAR {100 * metrics['mar']:6.2f} %  "
        f"P {metrics['precision']:.3f}  R {metrics['recall']:.3f}  ROC-AUC {metrics['roc_auc']:.3f}  "
        f"PR-AUC {metrics['pr_auc']:.3f}  (point-adjusted F1, extra: {metrics['point_adjusted_f1']:.3f})"
    )


def _fmt_nab(scores: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:6.2f}" for name, value in scores.items())


def markdown_table(rows: list[tuple[str, dict[str, Any], float]]) -> str:
    lines = [
        "| Method | F1 | FAR % | MAR % | ROC-AUC | PR-AUC | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m, seconds in rows:
        lines.append(
            f"| **{label}** | {m['f1']:.3f} | {100 * m['far']:.2f} | {100 * m['mar']:.2f} | "
            f"{m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {seconds:.0f} s |"
        )
    for name, f1, far, mar in LEADERBOARD:
        lines.append(f"| {name} (published) | {f1:.2f} | {far:.2f} | {mar:.2f} | | | |")
    return "\n".join(lines)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs, values parsed as JSON when possible (numbers, true/false, null, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="SKAB data folder (default %(default)s)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--files", nargs="*", default=(), help="subset, e.g. valve1/0.csv")
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=(), metavar="KEY=VALUE", help="extra MemAE parameters")
    parser.add_argument("--no-anomaly-free", action="store_true", help="skip the anomaly-free setting")
    parser.add_argument("--scores-out", default=None, help="save per-file scores (.npz) for plots")
    parser.add_argument("--json-out", default=None, help="write the results as JSON")
    add_run_options(parser)
    args = parser.parse_args(argv)
    apply_run_options(args)

    root = os.path.normpath(args.data)
    if not os.path.isdir(os.path.join(root, "valve1")):
        print(f"SKAB data not found at {root}; skipping (pass --data)", file=sys.stderr)
        return 0
    files = labelled_files(root, args.files)
    common = {"seed": args.seed, **parse_overrides(args.set)}
    if args.epochs is not None:
        common["epochs"] = args.epochs

    print(f"SKAB, {len(files)} files, torch threads {args.threads}, overrides {common}")
    rows: list[tuple[str, dict[str, Any], float]] = []
    saved: dict[str, np.ndarray] = {}
    changepoints: dict[str, dict[str, float]] = {}
    for variant in args.variants:
        params = {**common, **VARIANTS[variant]}
        start = time.perf_counter()
        results = run_leaderboard(root, files, params)
        seconds = time.perf_counter() - start
        metrics = pooled(results)
        rows.append((f"{variant} (leaderboard protocol)", metrics, seconds))
        print(f"{variant:>15} leaderboard : {_fmt(metrics)}  [{seconds:.0f} s]", flush=True)
        whole = pooled(results, whole_file=True)
        rows.append((f"{variant} (whole files incl. training rows, extra)", whole, seconds))
        print(f"{variant:>15} whole files : {_fmt(whole)}", flush=True)
        window = int(MemAE(**params).window)
        ahead = pooled(results, lookahead_window=window)
        rows.append((f"{variant} (every window covering the row, looks ahead, extra)", ahead, seconds))
        print(f"{variant:>15} look-ahead  : {_fmt(ahead)}", flush=True)
        for rule, rule_window in (("streaming", None), ("look-ahead", window)):
            scores = changepoint_scores(results, rule_window)
            changepoints[f"{variant} ({rule})"] = scores
            print(f"{variant:>15} NAB {rule:<10}: {_fmt_nab(scores)}", flush=True)
        for r in results:
            saved[f"{variant}/{r.name}"] = r.row_scores()
    if not args.no_anomaly_free:
        for variant in args.variants:
            params = {**common, **VARIANTS[variant]}
            start = time.perf_counter()
            results = run_anomaly_free(root, files, params)
            seconds = time.perf_counter() - start
            metrics = pooled(results)
            rows.append((f"{variant} (trained once on anomaly-free.csv)", metrics, seconds))
            print(f"{variant:>15} anomaly-free: {_fmt(metrics)}  [{seconds:.0f} s]", flush=True)
    print()
    print(markdown_table(rows))
    if args.scores_out:
        np.savez_compressed(args.scores_out, **saved)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "overrides": common,
                    "files": files,
                    "rows": [[n, m, s] for n, m, s in rows],
                    "nab": changepoints,
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
