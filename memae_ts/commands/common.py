"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import argparse

import pandas as pd

from memae_ts.errors import DataError

EXAMPLES_HEADER = "examples:\n"


def formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def add_data_options(parser: argparse.ArgumentParser, *, training: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--time-column", help="timestamp column (default: detected by name or content)")
    group.add_argument("--asset-column", help="column naming the machine when one file holds several")
    group.add_argument(
        "--label-column",
        help="label column (0 normal, 1 anomaly); columns named anomaly/label/changepoint are never inputs",
    )
    group.add_argument("--sep", help="CSV separator (default: detected; ',' ';' tab '|')")
    if training:
        group.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="COLUMN",
            help="numeric column to ignore (repeatable)",
        )


def parse_duration_seconds(text: str | None) -> float | None:
    """'90', '90s', '5min', '2h' → seconds; a bare number is seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        seconds = pd.Timedelta(text).total_seconds()
    except ValueError as exc:
        raise DataError(f"--max-gap: cannot read {text!r} as a duration (e.g. 30s, 5min, 2h)") from exc
    if seconds <= 0:
        raise DataError(f"--max-gap must be positive, got {text!r}")
    return seconds


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "runtime", "torch", "onnx", "numpy"],
        help="scoring engine (default auto: the C++ runtime when built, else torch, else numpy)",
    )
