"""`memae-ts demo-data`: write the bundled synthetic pump data set."""

from __future__ import annotations

import argparse
import os

from memae_ts.commands.common import formatter

EPILOG = """\
examples:
  memae-ts demo-data history.csv --days 7 --no-faults --seed 1    normal operation to train on
  memae-ts demo-data live.csv --days 3 --seed 2                   with labelled faults

Eight correlated pump sensors sampled every minute, operating-mode changes, and (unless
--no-faults) four labelled faults: bearing-temperature drift, stuck pressure transmitter,
vibration spike burst, clogged strainer. Same seed, same file.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo-data",
        help="generate a synthetic plant CSV with labelled faults",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("output", help="CSV file to write")
    p.add_argument("--days", type=float, default=7.0, help="length in days (default 7)")
    p.add_argument("--period", type=int, default=60, help="sampling period in seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-faults", action="store_true", help="normal operation only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.demo_data import generate

    frame = generate(days=args.days, period_seconds=args.period, seed=args.seed, faults=not args.no_faults)
    directory = os.path.dirname(args.output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    frame.to_csv(args.output, index=False)
    print(f"wrote {len(frame)} rows ({int(frame['anomaly'].sum())} labelled anomalous) to {args.output}")
    return 0
