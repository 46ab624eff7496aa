"""`memae-ts score`: one anomaly score per timestamp for a CSV."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from memae_ts.commands.common import add_data_options, add_engine_option, formatter, read_options

EPILOG = """\
examples:
  memae-ts score pump-model today.csv -o scores.csv
  memae-ts score pump-model today.csv --engine numpy | head

Output columns: timestamp (or row), [asset], score, normalised_score (1.0 = alarm threshold),
is_anomaly (0/1), top_sensors ("name:share;..." of the worst-reconstructed sensors), [label].
The window ending at a timestamp scores that timestamp; the first window-1 rows of each
stretch without gaps have no score (empty).
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "score", help="score a CSV with a trained model", epilog=EPILOG, formatter_class=formatter()
    )
    p.add_argument("model", help="model bundle directory written by 'memae-ts fit'")
    p.add_argument(
        "csv",
        metavar="DATA",
        help="data to score (CSV, Parquet, .xlsx or '-' for stdin) with the training data's sensor columns",
    )
    p.add_argument(
        "-o",
        "--output",
        help="file to write: Parquet if it ends in .parquet, else CSV (default: standard output)",
    )
    p.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="a Parquet input estimated to need more memory than this (e.g. 4GB) is scored row group by "
        "row group, into Parquet when -o ends in .parquet (default: half of this machine's memory)",
    )
    add_data_options(p, training=False)
    add_engine_option(p)
    p.set_defaults(handler=run)


def load_scored(args: argparse.Namespace, require_labels: bool = False):  # type: ignore[no-untyped-def]
    """Load the model and the CSV (with the model's sensors) and score every row."""
    from memae_ts.data import load_csv
    from memae_ts.estimator import load

    model = load(args.model, engine=args.engine)
    config = model.bundle_.config
    data = load_csv(
        args.csv,
        time_column=args.time_column or config.get("time_column"),
        asset_column=args.asset_column or config.get("asset_column"),
        label_column=args.label_column,
        sensors=model.sensors_,
        require_labels=require_labels,
        changepoint_column=getattr(args, "changepoint_column", None),
        options=read_options(args, config.get("reading")),
        drop_duplicates=args.drop_duplicates,
    )
    data_scored, result = model.score_rows(data)
    return model, data_scored, result


def check_output(path: str | None, option: str = "-o") -> None:
    """Fail before the work, not after it, when the output file cannot be created."""
    if not path:
        return
    from memae_ts.errors import MemaeError

    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise MemaeError(f"{option} {path}: directory {parent} does not exist")
    if Path(path).is_dir():
        raise MemaeError(f"{option} {path}: is a directory, not a file")
    if not os.access(parent, os.W_OK):
        raise MemaeError(f"{option} {path}: directory {parent} is not writable")


def run(args: argparse.Namespace) -> int:
    from memae_ts.scoring import scores_frame
    from memae_ts.stream_score import score_if_too_large, write_scores

    check_output(args.output)
    if score_if_too_large(args):  # Parquet larger than --memory-limit: streamed, written, reported
        return 0

    model, data, result = load_scored(args)
    frame = scores_frame(data, result)
    if args.output:
        write_scores(frame, args.output, data.timestamps)  # Parquet for .parquet, else CSV
        flagged = int(result.is_anomaly.sum())
        print(
            f"scored {int((~frame['score'].isna()).sum())} of {len(frame)} rows with the "
            f"{model.engine_.name} engine; {flagged} flagged as anomalous; written to {args.output}",
            file=sys.stderr,
        )
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0
