"""`memae-ts inspect`: how a data file is read, before any training.

Shows every decision the reader makes (encoding, separator, decimal mark, time column and
format with parsed examples, time zone, sampling, sensors, ignored columns and why, quality
markers, machines, labels) and what the gap rules would do with a given window, so a plant
engineer can check an export in seconds and pin whatever was guessed wrongly.
"""

from __future__ import annotations

import argparse
import json

from memae_ts.cli.commands.common import (
    add_data_options,
    add_resample_options,
    formatter,
    load_training_data,
    parse_duration_seconds,
)

EPILOG = """\
examples:
  memae-ts inspect export.csv
  memae-ts inspect export.csv --dayfirst --tz Europe/Berlin --encoding cp1252
  memae-ts inspect pi-export.csv --resample 10s      what a 10 s grid would make of it
  memae-ts inspect plant.parquet --asset-column machine --json

Every option here is also an option of fit and score: pin with it whatever was detected wrongly.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from memae_ts.estimator import MemAE

    defaults = MemAE().get_params()
    p = subparsers.add_parser(
        "inspect",
        help="show how a data file is read (format, times, sensors, gaps)",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("csv", metavar="DATA", help="CSV, Parquet, .xlsx or '-' for stdin")
    add_data_options(p, training=True)
    w = p.add_argument_group("what fit would do")
    w.add_argument(
        "--window", type=int, default=defaults["window"], help="rows per window (default %(default)s)"
    )
    w.add_argument("--max-gap", help="split where timestamps are further apart (default 3 sampling periods)")
    w.add_argument("--max-fill", type=int, default=defaults["max_fill"], help="forward-fill limit in rows")
    add_resample_options(w)
    p.add_argument("--json", action="store_true", help="the summary as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.io.windows import default_max_gap_seconds, gap_report, segment

    data = load_training_data(args)
    if args.resample:
        from memae_ts.io.regular import make_spec, resample_data

        data = resample_data(data, make_spec(args.resample, args.resample_method, args.resample_limit))
        max_gap, max_fill = None, 0
    else:
        max_gap = parse_duration_seconds(args.max_gap) or default_max_gap_seconds(data)
        max_fill = args.max_fill
    segments = segment(data, max_gap_seconds=max_gap, max_fill_rows=max_fill)
    data.summary.gaps = gap_report(data, segments, args.window, max_gap, max_fill)
    if args.json:
        print(json.dumps(data.summary.to_dict(), indent=2, default=str))
    else:
        print(data.summary.format())
    return 0
