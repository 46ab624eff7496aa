"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from memae_ts.io.durations import duration_seconds
from memae_ts.io.reading import ReadOptions

if TYPE_CHECKING:
    from memae_ts.io.data import SensorData

EXAMPLES_HEADER = "examples:\n"


def formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def add_data_options(parser: argparse.ArgumentParser, *, training: bool) -> None:
    """The reading options every command that reads data shares (see `memae-ts inspect`)."""
    group = parser.add_argument_group("data (what `memae-ts inspect DATA` shows was detected)")
    group.add_argument("--time-column", help="timestamp column (default: detected by name or content)")
    group.add_argument(
        "--time-format",
        help="strftime format of the time column, e.g. '%%d.%%m.%%Y %%H:%%M:%%S', or ISO8601, epoch-s, "
        "epoch-ms, excel (default: inferred from the whole column)",
    )
    order = group.add_mutually_exclusive_group()
    order.add_argument(
        "--dayfirst", action="store_const", const=True, dest="dayfirst", help="01.02.2026 is 1 February"
    )
    order.add_argument(
        "--monthfirst", action="store_const", const=False, dest="dayfirst", help="01/02/2026 is January 2"
    )
    group.add_argument(
        "--tz",
        help="time zone of times without a UTC offset, e.g. Europe/Berlin (default: taken as UTC)",
    )
    group.add_argument("--asset-column", help="column naming the machine when one file holds several")
    group.add_argument(
        "--label-column",
        help="label column (0 normal, 1 anomaly); columns named anomaly/label/changepoint are never inputs",
    )
    group.add_argument("--sep", help="CSV separator (default: detected; ',' ';' tab '|')")
    group.add_argument(
        "--encoding", help="text encoding, e.g. cp1252 for Windows exports (default: UTF-8, or the BOM's)"
    )
    group.add_argument(
        "--skip-rows",
        type=int,
        default=0,
        metavar="N",
        help="rows under the header that are not data (units, descriptions)",
    )
    group.add_argument(
        "--na-values",
        action="append",
        default=[],
        metavar="MARKER",
        help="a value that means 'no reading', e.g. -9999 (repeatable; text such as Bad or "
        "'I/O Timeout' in a numeric column is always read as missing and counted)",
    )
    group.add_argument(
        "--drop-duplicates",
        action="store_true",
        help="keep the first of rows repeating a timestamp even when they are more than 1 %% of the file",
    )
    if training:
        group.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="COLUMN",
            help="numeric column to ignore (repeatable)",
        )


def read_options(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> ReadOptions:
    """The options as given; a model's own reading settings (its bundle's) fill what was not."""
    defaults = defaults or {}
    return ReadOptions(
        sep=args.sep,
        encoding=args.encoding,
        skip_rows=args.skip_rows,
        na_values=tuple(args.na_values),
        time_format=args.time_format or defaults.get("time_format"),
        dayfirst=args.dayfirst if args.dayfirst is not None else defaults.get("dayfirst"),
        tz=args.tz or defaults.get("tz"),
    )


def parse_duration_seconds(text: str | None, option: str = "--max-gap") -> float | None:
    """'90', '90s', '5min', '2h' → seconds; a bare number is seconds."""
    return duration_seconds(text, option)


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "runtime", "torch", "onnx", "numpy"],
        help="scoring engine (default auto: the C++ runtime when built, else torch, else numpy)",
    )


def load_training_data(args: argparse.Namespace) -> SensorData:
    """DATA read as `fit` reads it (labels detected, every reading option): `inspect` shows
    exactly what `fit` would learn from."""
    from memae_ts.io.data import load_csv

    return load_csv(
        args.csv,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_column=args.label_column,
        exclude=args.exclude,
        options=read_options(args),
        detect_labels=True,
        drop_duplicates=args.drop_duplicates,
    )


def add_resample_options(group: argparse._ArgumentGroup) -> None:
    """--resample and its rule, the same for `fit` (which stores them in the bundle) and
    `inspect` (which shows what they would make of the data)."""
    group.add_argument(
        "--resample",
        metavar="PERIOD",
        help="put the data on a regular grid first, e.g. 10s or 1min (for historian exports stored by "
        "exception); the bundle remembers it and score/edge do the same",
    )
    group.add_argument(
        "--resample-method",
        choices=["hold", "interpolate"],
        default="hold",
        help="hold the last value (default) or interpolate linearly between readings",
    )
    group.add_argument(
        "--resample-limit",
        metavar="DURATION",
        help="hold or interpolate across at most this long; older values become missing "
        "(default: max(1h, 3 periods))",
    )


def add_alarm_options(parser: argparse.ArgumentParser, *, fit: bool = False) -> None:
    """The alarm rule's options (memae_ts.detection.alarms). In `fit` they are stored in the bundle; in
    `score`, `evaluate` and `plot` they override the bundle's rule for this run."""
    stored = "" if fit else " (default: the model's rule, see `memae-ts info`)"
    group = parser.add_argument_group(
        "alarm rule (persistence, hysteresis, minimum duration; counted in windows)"
    )
    group.add_argument(
        "--persistence",
        metavar="K/N",
        help="raise an alarm when K of the last N windows reach the threshold"
        + (" (default 3/5)" if fit else stored),
    )
    group.add_argument(
        "--clear-level",
        type=float,
        metavar="LEVEL",
        help="an alarm clears when fewer than K of the last N windows reach this normalised score"
        + (" (default 0.9)" if fit else stored),
    )
    group.add_argument(
        "--min-windows",
        type=int,
        metavar="M",
        help="a raised alarm stays on for at least M windows" + (" (default 5)" if fit else stored),
    )
    if not fit:
        group.add_argument(
            "--raw-alarms",
            action="store_true",
            help="no rule: every window at or above the threshold is an alarm (same as --persistence 1/1 "
            "--clear-level 1 --min-windows 1)",
        )


def persistence(text: str | None) -> tuple[int | None, int | None]:
    """'3/5' -> (3, 5); a malformed value is one line naming the option."""
    from memae_ts.errors import DataError

    if text is None:
        return None, None
    k, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(k), int(n)
    except ValueError:
        raise DataError(f"--persistence {text}: expected K/N, e.g. 3/5 (K of the last N windows)") from None


def alarm_rule_from_args(args: argparse.Namespace, base: Any) -> Any:
    """The bundle's rule `base` with this run's overrides (or the raw rule for --raw-alarms)."""
    from memae_ts.detection.alarms import AlarmRule

    if getattr(args, "raw_alarms", False):
        return AlarmRule.raw()
    k, n = persistence(getattr(args, "persistence", None))
    clear, minimum = getattr(args, "clear_level", None), getattr(args, "min_windows", None)
    rule: AlarmRule = base.replace(k=k, n=n, clear_level=clear, min_windows=minimum)
    return rule
