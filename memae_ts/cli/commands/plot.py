"""`memae-ts plot`: the diagnosis plot of one machine — the sensors behind its alarms, their share
of the error over time, the alarm episodes with their top sensors, as a PNG or interactive HTML."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from memae_ts.cli.commands.common import add_data_options, add_engine_option, formatter

if TYPE_CHECKING:
    import pandas as pd

    from memae_ts.io.data import SensorData

EPILOG = """\
examples:
  memae-ts plot pump-model today.csv -o today.png
  memae-ts plot pump-model plant.csv --asset pump-2 -o pump-2.png
  memae-ts plot pump-model plant.csv --asset all -o plant.png          plant-pump-1.png, plant-pump-2.png, ...
  memae-ts plot pump-model plant.csv --asset pump-2 --start 2026-11-02T06:00 --end 2026-11-02T18:00
  memae-ts plot pump-model plant.csv --asset pump-2 -o pump-2.html     interactive, one self-contained file
  memae-ts plot pump-model labelled.csv --label-column anomaly --sensor bearing_temp_c -o check.png

What the picture shows, top to bottom:
  sensor panels   the sensors with the largest summed share of the reconstruction error over the
                  alarmed windows (no alarm in view: the sensors furthest from their training level);
                  the subtitle says which rule chose them; --sensor pins them, --panels sets how many
  share strip     each shown sensor's share of the reconstruction error over time (grey: the rest)
  mode strip      the operating mode per row, when the model found modes
  score           normalised score (log), threshold at 1.0; alarm episodes shaded red and numbered,
                  listed under the picture with their top sensors; labelled anomalies orange
Lines break at time steps longer than the model's gap rule and between machines; missing
readings stay empty. With several machines and no --asset, the one with the most alarmed windows
is plotted and the command says so. --start/--end are read like the data's own times (its format,
or ISO 8601; --tz for plant local time). An .html output needs plotly: pip install 'memae-ts[plot]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "plot",
        help="diagnosis plot: the sensors behind the alarms, episodes, gaps (PNG or HTML)",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("csv", metavar="DATA", help="data to score and draw (CSV, Parquet, .xlsx)")
    p.add_argument(
        "-o",
        "--output",
        default="scores.png",
        help="picture to write: .png/.svg/.pdf (matplotlib) or .html (interactive, plotly) "
        "(default scores.png)",
    )
    p.add_argument("--title", help="figure title (default: the data path)")
    p.add_argument(
        "--asset",
        metavar="NAME",
        help="machine to plot when the file holds several; 'all' writes one file per machine "
        "(default: the one with the most alarmed windows)",
    )
    p.add_argument("--start", metavar="TIME", help="first time to show, like the data's times")
    p.add_argument("--end", metavar="TIME", help="last time to show (inclusive)")
    p.add_argument("--panels", type=int, default=6, metavar="N", help="sensor panels to draw (default 6)")
    p.add_argument(
        "--sensor",
        action="append",
        default=[],
        metavar="NAME",
        help="draw this sensor (repeatable; replaces the automatic choice)",
    )
    add_data_options(p, training=False)
    add_engine_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.cli.commands.score import check_output, load_scored
    from memae_ts.detection.alarms import AlarmRule
    from memae_ts.errors import MemaeError, MissingDependencyError
    from memae_ts.evaluation.plot import (
        PLOT_EXTRA,
        alarmed_windows,
        choose_assets,
        diagnose,
        gap_seconds,
        output_for,
        parse_bound,
        render,
    )

    if args.panels < 1:
        raise MemaeError(f"--panels {args.panels}: must be at least 1")
    html = args.output.lower().endswith((".html", ".htm"))
    try:  # before scoring: a missing extra is found in a second, not after minutes of work
        if html:
            import plotly  # noqa: F401
        else:
            import matplotlib  # noqa: F401
    except ImportError as exc:
        what = "an interactive HTML plot needs plotly" if html else "plots need matplotlib"
        raise MissingDependencyError(f"-o {args.output}: {what}: {PLOT_EXTRA}") from exc
    check_output(args.output)

    model, data, result = load_scored(args)
    config = model.bundle_.config
    rule = AlarmRule.from_config(config.get("alarm"))
    gap = gap_seconds(config)
    start = parse_bound(args.start, "--start", data, args.tz, args.dayfirst) if args.start else None
    end = parse_bound(args.end, "--end", data, args.tz, args.dayfirst) if args.end else None
    if start is not None and end is not None and end < start:
        raise MemaeError(f"--end {args.end} is before --start {args.start}")
    alarmed = alarmed_windows(data, result, rule, gap) if args.asset is None else {}
    assets, note = choose_assets(data, alarmed, args.asset)
    if note:
        print(note, file=sys.stderr)
    scaler = model.scaler_
    several = args.asset == "all"
    written = 0
    for asset in assets:
        output = output_for(args.output, asset, several=several)
        if several and not has_rows(data, asset, start, end):
            print(f"asset {asset}: no rows between --start and --end, no file written", file=sys.stderr)
            continue
        view = diagnose(
            data,
            result,
            asset=asset,
            start=start,
            end=end,
            max_gap_seconds=gap,
            rule=rule,
            center=scaler.center,
            scale=scaler.scale,
            panels=args.panels,
            sensors=args.sensor or None,
            title=args.title,
        )
        if html and view.x.size > BIG_HTML_ROWS:
            print(
                f"note: {view.x.size} rows in one HTML file make it large and slow to open; "
                "--start/--end narrow it",
                file=sys.stderr,
            )
        render(view, output)
        written += 1
        who = f"asset {asset}: " if asset is not None else ""
        print(
            f"{who}plot written to {output} ({len(view.episodes)} alarm episode(s); panels by {view.rule})",
            file=sys.stderr,
        )
    if not written:
        raise MemaeError(f"--start/--end: no asset of {data.source} has rows in that time range")
    return 0


BIG_HTML_ROWS = 200_000  # ~50 MB of HTML for 8 panels: still opens, but slowly


def has_rows(
    data: SensorData, asset: str | None, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> bool:
    """Whether the asset has a row between start and end (for --asset all, which skips one that
    has none and says so instead of failing the other machines' plots)."""
    import numpy as np

    rows = np.flatnonzero(data.assets == asset) if data.assets is not None else np.arange(len(data))
    if data.timestamps is None or rows.size == 0:
        return bool(rows.size)
    times = data.timestamps[rows]
    keep = np.ones(rows.size, dtype=bool)
    if start is not None:
        keep &= np.asarray(times >= start)
    if end is not None:
        keep &= np.asarray(times <= end)
    return bool(keep.any())
