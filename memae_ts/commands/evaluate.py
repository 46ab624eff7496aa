"""`memae-ts evaluate`: detection quality against labels."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from memae_ts.commands.common import add_data_options, add_engine_option, formatter
from memae_ts.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from memae_ts.data import SensorData

EPILOG = """\
examples:
  memae-ts evaluate pump-model labelled.csv --label-column anomaly
  memae-ts evaluate pump-model labelled.csv --label-column anomaly --json
  memae-ts evaluate pump-model skab.csv --sep ';' --changepoint-column changepoint

Point-wise metrics over the rows that have a score (warm-up rows are excluded): precision,
recall, F1, FAR (false alarm rate), MAR (missed alarm rate), ROC-AUC and PR-AUC. The
point-adjusted F1 is an extra, clearly labelled: it credits a whole anomaly segment when any
point of it is flagged and overstates quality.

With --changepoint-column, also the SKAB changepoint leaderboard's NAB scores (standard, low FP,
low FN; 0 = no detection, 100 = perfect): every switch of the alarm on or off is an event, and
an event inside a window centred on a labelled changepoint (--nab-window, 30 s) earns credit,
the earlier the more. Needs a time column; computed per asset.
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
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=run, label_column="anomaly")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from memae_ts.commands.score import load_scored
    from memae_ts.metrics import evaluate

    model, data, result = load_scored(args, require_labels=True)
    assert data.labels is not None
    metrics = evaluate(data.labels, result.score, model.threshold_)
    if args.changepoint_column:
        metrics.update(changepoint_scores(args, data, result.normalised))
    if args.json:
        print(json.dumps(metrics, indent=2, default=float))
        return 0
    print(f"{data.source}: {len(data)} rows, {int(np.isfinite(result.score).sum())} scored")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<22} {value:.4f}")
        else:
            print(f"  {key:<22} {value}")
    return 0


def changepoint_scores(
    args: argparse.Namespace, data: SensorData, normalised: np.ndarray
) -> dict[str, float]:
    """NAB per profile over every row (warm-up rows raise no alarm), one series per asset."""
    import numpy as np

    from memae_ts.data import asset_rows
    from memae_ts.nab import WINDOW_SECONDS, events_of, nab

    if data.timestamps is None:
        raise DataError(f"{data.source}: the changepoint score needs a time column (--time-column)")
    window = WINDOW_SECONDS if args.nab_window is None else args.nab_window
    if not window > 0:
        raise DataError(f"--nab-window must be a positive number of seconds, got {window}")
    assert data.changepoints is not None  # load_scored read --changepoint-column
    seconds = data.timestamps.as_unit("ns").asi8 / 1e9
    alarms = np.nan_to_num(normalised, nan=0.0) >= 1.0
    changepoints = data.changepoints
    scores = nab([events_of(seconds[g], changepoints[g], alarms[g], window) for g in asset_rows(data)])
    return {f"nab_{name}": value for name, value in scores.items()}
