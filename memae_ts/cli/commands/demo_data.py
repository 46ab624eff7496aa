"""`memae-ts demo-data`: write the bundled synthetic pump data set."""

from __future__ import annotations

import argparse
import os

from memae_ts.cli.commands.common import formatter

EPILOG = """\
examples:
  memae-ts demo-data history.csv --days 7 --no-faults --seed 1    normal operation to train on
  memae-ts demo-data live.csv --days 3 --seed 2                   with labelled faults
  memae-ts demo-data plant.csv --days 3 --assets 3                three pumps in one file (asset column)

Eight correlated pump sensors sampled every minute, operating-mode changes, and (unless
--no-faults) four labelled faults: bearing-temperature drift, stuck pressure transmitter,
vibration spike burst, clogged strainer. Same seed, same file. With --assets N the file holds N
pumps (column `asset`, pump-1 ...), each with its own faults, a two-hour historian outage
(missing rows) and about 0.2 %% empty cells, as plant exports look.
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
    p.add_argument(
        "--assets",
        type=int,
        default=1,
        metavar="N",
        help="pumps in the file; more than 1 adds an asset column, outages and empty cells (default 1)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.errors import MemaeError
    from memae_ts.io.demo_data import generate, generate_fleet

    if args.assets < 1:
        raise MemaeError(f"--assets {args.assets}: must be at least 1")
    common = {"days": args.days, "period_seconds": args.period, "seed": args.seed}
    common["faults"] = not args.no_faults
    frame = generate(**common) if args.assets == 1 else generate_fleet(assets=args.assets, **common)
    directory = os.path.dirname(args.output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    frame.to_csv(args.output, index=False)
    extra = ""
    if args.assets > 1:
        from memae_ts.io.demo_data import SENSORS

        empty = int(frame[SENSORS].isna().to_numpy().sum())
        extra = f", {args.assets} pumps (column asset), each with a two-hour outage, {empty} empty cells"
    print(
        f"wrote {len(frame)} rows ({int(frame['anomaly'].sum())} labelled anomalous{extra}) to {args.output}"
    )
    return 0
