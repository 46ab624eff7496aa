"""`memae-ts evaluate`: detection quality against labels."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from memae_ts.cli.commands.common import add_alarm_options, add_data_options, add_engine_option, formatter
from memae_ts.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from memae_ts.io.data import SensorData

EPILOG = """\
examples:
  memae-ts evaluate pump-model labelled.csv --label-column anomaly
  memae-ts evaluate pump-model labelled.csv --label-column anomaly --json
  memae-ts evaluate pump-model skab.csv --sep ';' --changepoint-column changepoint
  memae-ts evaluate pump-model live.csv --baseline pca --baseline iforest --train history.csv

Point-wise metrics over the rows that have a score (warm-up rows are excluded): precision,
recall, F1, FAR (false alarm rate), MAR (missed alarm rate), ROC-AUC and PR-AUC. A row counts
as flagged when the model's alarm rule has the alarm on there (persistence, hysteresis,
minimum duration; `memae-ts info` shows it, --persistence/--clear-level/--min-windows override
it, --raw-alarms flags every window at the threshold); window_f1, window_far and window_mar
are the same metrics for the raw per-window decision, and episodes the number of alarms. The
point-adjusted F1 is an extra, clearly labelled: it credits a whole anomaly segment when any
point of it is flagged and overstates quality.

With --range-metrics (pip install 'memae-ts[metrics]'), also VUS-PR and VUS-ROC (areas under
range-based PR/ROC curves averaged over label buffers up to --vus-window rows, by default the
model's window: threshold-free and tolerant of an alarm a little early or late) and the
range-based F1 of the alarm decision (Tatbul et al. 2018: flat bias, no existence reward).

With --changepoint-column, also the SKAB changepoint leaderboard's NAB scores (standard, low FP,
low FN; 0 = no detection, 100 = perfect): every switch of the alarm on or off is an event, and
an event inside a window centred on a labelled changepoint (--nab-window, 30 s) earns credit,
the earlier the more. Needs a time column; computed per asset.

With --baseline (pca, iforest, ae; repeatable) and --train (the model's training data), each
baseline is fitted on that data with the model's own data rules (window, gaps, resampling,
held-out split, labelled rows left out, the model's scaler) and scored on DATA beside the
model: does the memory-augmented autoencoder earn its place on your data? pca = PCA T²+Q with
the classic control limits (99 %), iforest = IsolationForest on windows (needs
scikit-learn), ae = the same network without memory (needs torch). A --train file that is not
the model's training data (other fingerprint) is used anyway and said so.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "evaluate",
        help="precision, recall, F1, FAR, MAR, AUCs against labels",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("csv", help="labelled data (a 0/1 label column)")
    add_data_options(p, training=False)
    add_engine_option(p)
    p.add_argument(
        "--changepoint-column",
        help="0/1 column marking labelled changepoints: adds the NAB changepoint scores",
    )
    p.add_argument(
        "--nab-window",
        type=float,
        metavar="SECONDS",
        help="width of the NAB window around each changepoint (default 30 s, as SKAB's leaderboard)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        choices=["pca", "iforest", "ae"],
        help="also fit this baseline on --train and evaluate it beside the model (repeatable)",
    )
    p.add_argument(
        "--train",
        metavar="TRAIN_DATA",
        help="the model's training data, for --baseline (read with the model's reading options)",
    )
    p.add_argument(
        "--range-metrics",
        action="store_true",
        help="also VUS-PR, VUS-ROC and range-based F1 (needs pip install 'memae-ts[metrics]'; "
        "VUS takes minutes on 10^4+ rows)",
    )
    p.add_argument(
        "--vus-window",
        type=int,
        metavar="ROWS",
        help="largest label buffer of VUS-PR/VUS-ROC, in rows (default: the model's window)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_alarm_options(p)
    p.set_defaults(handler=run, label_column="anomaly")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from memae_ts.cli.commands.score import load_scored
    from memae_ts.evaluation.metrics import evaluate

    if args.baseline and not args.train:
        raise DataError("--baseline needs --train TRAIN_DATA (the model's training data, to fit it on)")
    if args.train and not args.baseline:
        raise DataError("--train is only used with --baseline pca|iforest|ae")
    model, data, result = load_scored(args, require_labels=True)
    assert data.labels is not None
    metrics = with_alarm_rule(evaluate(data.labels, result.score, model.threshold_), data.labels, result)
    if args.changepoint_column:
        metrics.update(changepoint_scores(args, data, result.normalised, result.alarm))
    if args.range_metrics:
        from memae_ts.evaluation.metrics import range_metrics

        # the same 0/1 decision as the headline F1: the alarm rule's, else score >= threshold
        flags = result.alarm if result.alarm is not None else np.nan_to_num(result.score) >= model.threshold_
        window = args.vus_window if args.vus_window is not None else int(model.bundle_.config["window"])
        flags = np.asarray(flags, dtype=np.int64)
        metrics.update(range_metrics(data.labels, result.score, flags, vus_window=window))
    elif args.vus_window is not None:
        raise DataError("--vus-window is only used with --range-metrics")
    baselines = run_baselines(args, model) if args.baseline else {}
    if args.json:
        out = {**metrics, "baselines": baselines} if baselines else metrics
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(f"{data.source}: {len(data)} rows, {int(np.isfinite(result.score).sum())} scored")
    if baselines:
        print_side_by_side(metrics, baselines)
        return 0
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<22} {value:.4f}")
        else:
            print(f"  {key:<22} {value}")
    return 0


COMPARED = (
    "precision", "recall", "f1", "far", "mar", "roc_auc", "pr_auc", "tp", "fp", "tn", "fn", "n_scored",
)  # fmt: skip


def run_baselines(args: argparse.Namespace, model: Any) -> dict[str, dict[str, Any]]:
    """Fit each --baseline on --train with the model's data rules and evaluate it on DATA."""
    import sys

    from memae_ts.cli.commands.common import read_options
    from memae_ts.evaluation.baselines import make_baseline
    from memae_ts.evaluation.metrics import evaluate
    from memae_ts.io.data import load_csv

    config = model.bundle_.config
    reading = read_options(args, config.get("reading"))

    common: dict[str, Any] = {
        "time_column": args.time_column or config.get("time_column"),
        "asset_column": args.asset_column or config.get("asset_column"),
        "sensors": model.sensors_,
        "options": reading,
        "drop_duplicates": args.drop_duplicates,
    }
    # Training data as fit read it: label columns detected, so labelled rows stay out of training.
    train_label = config.get("training", {}).get("params", {}).get("label_column")
    train = load_csv(args.train, label_column=train_label, detect_labels=True, **common)
    test = load_csv(args.csv, label_column=args.label_column, require_labels=True, **common)
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(args.baseline):
        baseline = make_baseline(kind, source=model.bundle_).fit(train)
        scored, result = baseline.score_rows(test)
        assert scored.labels is not None
        metrics = evaluate(scored.labels, result.score, baseline.threshold_)
        for note in baseline.notes_:
            print(f"note: {kind}: {note}", file=sys.stderr)
        out[kind] = {**metrics, "description": baseline.describe(), "notes": list(baseline.notes_)}
    return out


def print_side_by_side(metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> None:
    names = ["model", *baselines]
    print(f"  {'':<12}" + "".join(f"{n:>12}" for n in names))
    for key in COMPARED:
        cells = [metrics.get(key), *(b.get(key) for b in baselines.values())]
        text = [f"{c:>12.4f}" if isinstance(c, float) else f"{c!s:>12}" for c in cells]
        print(f"  {key:<12}" + "".join(text))
    for name, b in baselines.items():
        print(f"  {name}: {b['description']}")


def changepoint_scores(
    args: argparse.Namespace, data: SensorData, normalised: np.ndarray, alarm: np.ndarray | None = None
) -> dict[str, float]:
    """NAB per profile over every row (warm-up rows raise no alarm), one series per asset."""
    import numpy as np

    from memae_ts.evaluation.nab import WINDOW_SECONDS, events_of, nab
    from memae_ts.io.data import asset_rows

    if data.timestamps is None:
        raise DataError(f"{data.source}: the changepoint score needs a time column (--time-column)")
    window = WINDOW_SECONDS if args.nab_window is None else args.nab_window
    if not window > 0:
        raise DataError(f"--nab-window must be a positive number of seconds, got {window}")
    assert data.changepoints is not None  # load_scored read --changepoint-column
    seconds = data.timestamps.as_unit("ns").asi8 / 1e9
    alarms = np.nan_to_num(normalised, nan=0.0) >= 1.0 if alarm is None else np.asarray(alarm, dtype=bool)
    changepoints = data.changepoints
    scores = nab([events_of(seconds[g], changepoints[g], alarms[g], window) for g in asset_rows(data)])
    return {f"nab_{name}": value for name, value in scores.items()}


def with_alarm_rule(metrics: dict[str, Any], labels: Any, result: Any) -> dict[str, Any]:
    """The headline counts and rates under the alarm rule (what an operator sees), the raw
    per-window ones kept as window_*; unchanged when no rule was applied."""
    import numpy as np

    from memae_ts.evaluation.metrics import confusion_counts, point_adjust, rates

    if result.alarm is None:
        return metrics
    scored = np.isfinite(result.score)
    y = np.asarray(labels)[scored]
    predicted = np.asarray(result.alarm, dtype=np.int64)[scored]
    counts = confusion_counts(y, predicted)
    out = dict(metrics)
    for key in ("precision", "recall", "f1", "far", "mar"):
        out[f"window_{key}"] = metrics[key]
    out.update(counts)
    out.update(rates(counts))
    out["point_adjusted_f1"] = rates(confusion_counts(y, point_adjust(y, predicted)))["f1"]
    out["episodes"] = len(result.episodes)
    return out
