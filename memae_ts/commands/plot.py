"""`memae-ts plot`: a PNG of sensors, score, threshold, flagged spans and labels."""

from __future__ import annotations

import argparse

from memae_ts.commands.common import add_data_options, add_engine_option, formatter

EPILOG = """\
examples:
  memae-ts plot pump-model today.csv -o today.png
  memae-ts plot pump-model labelled.csv --label-column anomaly -o check.png

Red spans are flagged by the model, orange spans are labelled anomalies (when a label column is
given); the bottom panel shows the normalised score with the threshold at 1.0.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "plot", help="draw sensors, score and threshold to a PNG", epilog=EPILOG, formatter_class=formatter()
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("csv", help="data to score and draw")
    p.add_argument("-o", "--output", default="scores.png", help="PNG file (default scores.png)")
    p.add_argument("--title", help="figure title (default: the CSV path)")
    add_data_options(p, training=False)
    add_engine_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.commands.score import load_scored
    from memae_ts.plot import plot_scores

    _, data, result = load_scored(args)
    plot_scores(data, result, args.output, args.title)
    print(f"plot written to {args.output}")
    return 0
