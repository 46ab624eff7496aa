"""`memae-ts score`: one anomaly score per timestamp for a CSV."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from memae_ts.cli.commands.common import (
    add_alarm_options,
    add_data_options,
    add_engine_option,
    alarm_rule_from_args,
    formatter,
    read_options,
)

EPILOG = """\
examples:
  memae-ts score pump-model today.csv -o scores.csv
  memae-ts score pump-model today.csv --engine numpy | head
  memae-ts score pump-model today.csv -o scores.csv --episodes episodes.csv
  memae-ts score pump-model today.csv --episodes episodes.csv --persistence 5/10 --min-windows 30

Output columns: timestamp (or row), [asset], score, normalised_score (1.0 = alarm threshold),
is_anomaly (0/1: this window alone reaches the threshold), alarm (0/1: the alarm rule's
decision, what an alarm panel shows), tail_probability (share of normal windows expected at or
above this score; the same meaning for every model), top_sensors ("name:share;..." of the
worst-reconstructed sensors), [label]. The window ending at a timestamp scores that timestamp;
the first window-1 rows of each stretch without gaps have no score (empty).

--episodes FILE writes one row per alarm episode: asset, start (the window that raised it),
end (its last alarmed window), duration_seconds, windows, peak (highest normalised score) and
peak_time, top_sensors (share of the error summed over the episode) and end_reason (cleared,
gap: the data stopped or broke off while it was on, open: still on at the end of the data).
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
    p.add_argument(
        "--follow-drift",
        action="store_true",
        help="let the memory follow slow drift while scoring, in time order: windows below half the "
        "threshold pull the slots they use towards them, bounded per step and in total; the drift and "
        "every update are reported (see docs: following slow drift)",
    )
    p.add_argument(
        "--hop",
        metavar="K",
        default="1",
        help="score every K-th window end per asset (on the clock: the windows ending in each new "
        "interval of K sampling periods since the Unix epoch, and the first of every stretch), as the "
        "edge daemon's [processing] hop; the other rows get no score. An anomaly is seen up to K-1 "
        "readings later (default: 1, every window)",
    )
    p.add_argument(
        "--episodes",
        metavar="FILE",
        help="also write the alarm episodes to FILE (CSV; Parquet if it ends in .parquet)",
    )
    add_data_options(p, training=False)
    add_alarm_options(p)
    add_engine_option(p)
    p.set_defaults(handler=run)


def load_scored(args: argparse.Namespace, require_labels: bool = False):  # type: ignore[no-untyped-def]
    """Load the model and the CSV (with the model's sensors) and score every row."""
    from memae_ts.estimator import load
    from memae_ts.io.data import load_csv

    model = load(args.model, engine=args.engine)
    model.follow_drift = bool(getattr(args, "follow_drift", False))
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
    model.alarm_rule_ = alarm_rule_from_args(args, model.alarm_rule_)  # --persistence etc.
    from memae_ts.detection.hop import check_hop

    data_scored, result = model.score_rows(data, hop=check_hop(getattr(args, "hop", 1), "--hop"))
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
    from memae_ts.detection.scoring import scores_frame
    from memae_ts.detection.stream_score import score_if_too_large, write_scores

    check_output(args.output)
    check_episodes_output(args)
    if args.follow_drift:
        from memae_ts.detection.stream_score import plan_scoring
        from memae_ts.errors import MemaeError

        if plan_scoring(args.csv, args.memory_limit) is not None:
            raise MemaeError(
                f"--follow-drift: {args.csv} is larger than the memory limit and would be scored row group "
                "by row group, which does not follow drift; raise --memory-limit or split the file"
            )
    elif getattr(args, "hop", "1") != "1":
        from memae_ts.detection.hop import check_hop
        from memae_ts.detection.stream_score import plan_scoring
        from memae_ts.errors import MemaeError

        check_hop(args.hop, "--hop")
        if plan_scoring(args.csv, args.memory_limit) is not None:
            raise MemaeError(
                f"--hop: {args.csv} is larger than the memory limit and would be scored row group by row "
                "group, which does not apply a hop yet; raise --memory-limit or split the file"
            )
    elif score_if_too_large(args):  # Parquet larger than --memory-limit: streamed, written, reported
        return 0

    model, data, result = load_scored(args)
    frame = scores_frame(data, result)
    if args.episodes:
        write_episodes(args.episodes, data, result)
    follower = getattr(model, "follower_", None)
    if follower is not None:
        print(follower.summary(), file=sys.stderr)
    if args.output:
        write_scores(frame, args.output, data.timestamps)  # Parquet for .parquet, else CSV
        flagged = int(result.is_anomaly.sum())
        alarmed = int(result.alarm.sum()) if result.alarm is not None else 0
        print(
            f"scored {int((~frame['score'].isna()).sum())} of {len(frame)} rows with the "
            f"{model.engine_.name} engine; {flagged} window(s) at or above the threshold, {alarmed} "
            f"with the alarm on in {len(result.episodes)} episode(s) ({model.alarm_rule_.describe()}); "
            f"written to {args.output}",
            file=sys.stderr,
        )
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0


def check_episodes_output(args: argparse.Namespace) -> None:
    """--episodes must be writable, another file than -o, and the input read whole."""
    if not getattr(args, "episodes", None):
        return
    from memae_ts.detection.stream_score import plan_scoring
    from memae_ts.errors import MemaeError

    check_output(args.episodes, "--episodes")
    if args.output and os.path.abspath(args.episodes) == os.path.abspath(args.output):
        raise MemaeError(f"--episodes {args.episodes}: is also the -o file; give two files")
    if plan_scoring(args.csv, getattr(args, "memory_limit", None)) is not None:
        raise MemaeError(
            f"--episodes: {args.csv} is larger than the memory limit and would be scored row group by row "
            "group, which does not collect episodes yet; raise --memory-limit or split the file"
        )


def write_episodes(path: str, data: Any, result: Any) -> None:
    """The episodes table (memae_ts.detection.alarms.episodes_frame), Parquet for .parquet, else CSV."""
    from memae_ts.detection.alarms import episodes_frame

    frame = episodes_frame(result.episodes, data.sensors, data.timestamps is not None)
    if path.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.6g")
    print(f"{len(frame)} alarm episode(s) written to {path}", file=sys.stderr)
