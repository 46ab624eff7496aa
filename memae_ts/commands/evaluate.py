"""`memae-ts evaluate`: detection quality against labels."""

from __future__ import annotations

import argparse
import json

from memae_ts.commands.common import add_data_options, add_engine_option, formatter

EPILOG = """\
examples:
  memae-ts evaluate pump-model labelled.csv --label-column anomaly
  memae-ts evaluate pump-model labelled.csv --label-column anomaly --json

Point-wise metrics over the rows that have a score (warm-up rows are excluded): precision,
recall, F1, FAR (false alarm rate), MAR (missed alarm rate), ROC-AUC and PR-AUC. The
point-adjusted F1 is an extra, clearly labelled: it credits a whole anomaly segment when any
point of it is flagged and overstates quality.
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
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=run, label_column="anomaly")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from memae_ts.commands.score import load_scored
    from memae_ts.metrics import evaluate

    model, data, result = load_scored(args, require_labels=True)
    assert data.labels is not None
    metrics = evaluate(data.labels, result.score, model.threshold_)
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
