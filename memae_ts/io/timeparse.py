"""One timestamp format per column: inferred from the whole column, shown, and pinnable.

Why not `pd.to_datetime(format="mixed")`: it guesses per value, so `01.10.2026 00:00` becomes
10 January and `13.10.2026 00:00` 13 October in the same column, one minute apart in the file and
months apart after parsing. Here a column has exactly one format. It is chosen from a list of
the formats historians and spreadsheets write; day-first against month-first is decided by a
value that proves it (a first field above 12), and when no value does, we refuse and name the
options (`--dayfirst`, `--monthfirst`, `--time-format`) instead of guessing. A value that does
not fit the column's format is an error naming its line.

Time zones: values with a UTC offset (`Z`, `+02:00`) are converted to UTC. Naive values are
local plant time more often than UTC: with `--tz Europe/Berlin` they are localised (daylight
saving handled); without it they are taken as UTC and the summary says so.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from memae_ts.errors import DataError

EPOCH_FORMATS = {"epoch-s": "s", "epoch-ms": "ms", "epoch-us": "us", "epoch-ns": "ns"}
_EPOCH_LABELS = {
    "s": "epoch seconds",
    "ms": "epoch milliseconds",
    "us": "epoch microseconds",
    "ns": "epoch nanoseconds",
}
EXCEL_FORMAT = "excel"
ISO_FORMAT = "ISO8601"
EXCEL_EPOCH = pd.Timestamp("1899-12-30", tz="UTC")

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?\s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_OFFSET = re.compile(r":\d{2}(?:[.,]\d+)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$")
_FIELDS = re.compile(r"\d+")

# (date pattern, order) — order says which field is the day when two readings are possible.
_DATES: list[tuple[str, str]] = [
    ("%Y-%m-%d", "ymd"),
    ("%Y/%m/%d", "ymd"),
    ("%Y.%m.%d", "ymd"),
    *[(f"%d{sep}%m{sep}{year}", "dmy") for sep in ".-/" for year in ("%Y", "%y")],
    *[(f"%m{sep}%d{sep}{year}", "mdy") for sep in ".-/" for year in ("%Y", "%y")],
    ("%d-%b-%Y", "named"),
    ("%d-%b-%y", "named"),
    ("%d %b %Y", "named"),
    ("%d %B %Y", "named"),
    ("%b %d %Y", "named"),
    ("%b %d, %Y", "named"),
    ("%d.%b.%Y", "named"),
]
_TIMES = [
    "%H:%M",
    "%H:%M:%S",
    "%H:%M:%S.%f",
    "%H:%M:%S,%f",
    "%I:%M %p",
    "%I:%M:%S %p",
    "%I:%M:%S.%f %p",
]
_JOINERS = [" ", "T", ", "]
_ZONES = ["", "%z", " %z"]


def _candidates() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for date, order in _DATES:
        out.append((date, order))
        for time, joiner, zone in itertools.product(_TIMES, _JOINERS, _ZONES):
            out.append((f"{date}{joiner}{time}{zone}", order))
    return out


CANDIDATES = _candidates()
_SAMPLE = 1000


@dataclass
class TimeParse:
    """How a time column was read: what `inspect` and `fit` print and the bundle stores."""

    column: str
    format: str
    reason: str
    timezone: str
    examples: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "column": self.column,
            "format": self.format,
            "reason": self.reason,
            "timezone": self.timezone,
            "examples": [list(pair) for pair in self.examples],
        }


def _fits(fmt: str, text: str) -> bool:
    try:
        dt.datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _parse_with(texts: pd.Series, fmt: str, aware: bool) -> pd.Series:
    """Parse every value with one format; unparseable values become NaT."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(texts, format=fmt, errors="coerce", utc=aware)


def _describe_line(rows: np.ndarray, texts: pd.Series, i: int) -> str:
    return f"line {rows[i]} ({texts.iloc[i]!r})"


def _sample_positions(n: int) -> np.ndarray:
    """First and last values plus an even spread: a format change late in a file is seen."""
    if n <= _SAMPLE:
        return np.arange(n)
    spread = np.linspace(0, n - 1, _SAMPLE - 200).astype(np.int64)
    return np.unique(np.concatenate([np.arange(100), spread, np.arange(n - 100, n)]))


def parse_time_column(
    series: pd.Series,
    *,
    source: str,
    column: str,
    rows: np.ndarray,
    time_format: str | None = None,
    dayfirst: bool | None = None,
    tz: str | None = None,
) -> tuple[pd.DatetimeIndex, TimeParse]:
    """Timestamps in UTC and how they were read; every problem is a `DataError` naming a line
    and the option that fixes it."""
    series = series.reset_index(drop=True)
    if tz is not None:
        _check_zone(tz)
    if pd.api.types.is_datetime64_any_dtype(series):
        return _native(series, source, column, rows, tz)
    if time_format in EPOCH_FORMATS or time_format == EXCEL_FORMAT:
        return _numeric(series, source, column, rows, time_format, tz)
    if time_format is None and (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        return _numeric(series, source, column, rows, None, tz)

    texts = series.astype("string").str.strip()
    empty = np.flatnonzero((texts.isna() | (texts == "")).to_numpy())
    if empty.size:
        raise DataError(
            f"{source}: line {rows[empty[0]]} has no timestamp in column {column!r} "
            f"({empty.size} such line(s)); fix the export or drop those rows"
        )
    has_offset = texts.str.contains(_OFFSET.pattern, regex=True).to_numpy()
    aware = bool(has_offset.all())
    if has_offset.any() and not aware:
        i = int(np.flatnonzero(~has_offset)[0])
        raise DataError(
            f"{source}: column {column!r} mixes times with and without a UTC offset: "
            f"{_describe_line(rows, texts, i)} has none; fix the export"
        )
    if time_format is not None:
        fmt, reason = time_format, "given with --time-format"
        parsed = _parse_with(texts, fmt, aware)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise DataError(
                f"{source}: {bad.size} value(s) in time column {column!r} do not match --time-format "
                f"{fmt!r}, e.g. {_describe_line(rows, texts, int(bad[0]))}"
            )
    else:
        fmt, reason, parsed = _infer(texts, source, column, rows, dayfirst, aware)
    index = pd.DatetimeIndex(parsed)
    index, zone_note = _to_utc(index, source, column, rows, tz)
    return index, TimeParse(column, fmt, reason, zone_note, _examples(texts, index))


def _infer(
    texts: pd.Series, source: str, column: str, rows: np.ndarray, dayfirst: bool | None, aware: bool
) -> tuple[str, str, pd.Series]:
    sample = texts.iloc[_sample_positions(len(texts))]
    if sample.str.fullmatch(_ISO.pattern).all():
        parsed = _parse_with(texts, ISO_FORMAT, aware)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size == 0:
            return ISO_FORMAT, "ISO 8601 (year-month-day)", parsed
    first = sample.iloc[0]
    viable = [(fmt, order) for fmt, order in CANDIDATES if _fits(fmt, first)]
    scored = []
    for fmt, order in viable:
        share = float(_parse_with(sample, fmt, aware).notna().mean())
        scored.append((share, fmt, order))
    complete = [(fmt, order) for share, fmt, order in scored if share == 1.0]
    if not complete:
        _raise_unreadable(texts, source, column, rows, scored, aware)
    fmt, order = complete[0]
    parsed = _parse_with(texts, fmt, aware)
    if order in ("dmy", "mdy"):
        twin_fmt = _swap_day_month(fmt, order)
        twin_parsed = _parse_with(texts, twin_fmt, aware)
        ok, twin_ok = parsed.notna().all(), twin_parsed.notna().all()
        if ok and twin_ok:
            if dayfirst is None:
                raise DataError(
                    _ambiguous_message(texts, source, column, rows, fmt, order, parsed, twin_parsed)
                )
            if (order == "dmy") != dayfirst:
                fmt, parsed, order = twin_fmt, twin_parsed, "dmy" if dayfirst else "mdy"
            reason = f"{'day' if order == 'dmy' else 'month'} first, as --{_flag(order)} says"
        elif twin_ok and not ok:
            order = "dmy" if order == "mdy" else "mdy"
            fmt, parsed, twin_parsed = twin_fmt, twin_parsed, parsed
            reason = _proof(texts, rows, twin_parsed, order)
        else:
            reason = _proof(texts, rows, twin_parsed, order)
        if dayfirst is not None and (order == "dmy") != dayfirst:
            raise DataError(
                f"{source}: --{'dayfirst' if dayfirst else 'monthfirst'} contradicts column {column!r}: "
                f"{reason}"
            )
    else:
        reason = "the only format every value fits"
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{source}: mixed time formats in column {column!r}: {_describe_line(rows, texts, i)} does not "
            f"match {fmt!r} of {_describe_line(rows, texts, 0)} ({bad.size} such line(s)); "
            f"fix the export or pass --time-format"
        )
    return fmt, reason, parsed


def _flag(order: str) -> str:
    return "dayfirst" if order == "dmy" else "monthfirst"


def _swap_day_month(fmt: str, order: str) -> str:
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _proof(texts: pd.Series, rows: np.ndarray, rejected: pd.Series, order: str) -> str:
    """The first line that rules out the other reading: the evidence shown to the user."""
    i = int(np.flatnonzero(rejected.isna().to_numpy())[0])
    which = "day" if order == "dmy" else "month"
    field_name = "first" if order == "dmy" else "second"
    return f"{which} first: {_describe_line(rows, texts, i)} has a {field_name} field above 12"


def _ambiguous_message(
    texts: pd.Series,
    source: str,
    column: str,
    rows: np.ndarray,
    fmt: str,
    order: str,
    parsed: pd.Series,
    twin: pd.Series,
) -> str:
    day_first, month_first = (parsed, twin) if order == "dmy" else (twin, parsed)
    hint = ""
    steady = {
        "day first": _in_order(day_first),
        "month first": _in_order(month_first),
    }
    if steady["day first"] != steady["month first"]:
        likely = "day first" if steady["day first"] else "month first"
        hint = f"; in file order only {likely} gives steadily rising times"
    dmy_fmt = fmt if order == "dmy" else _swap_day_month(fmt, order)
    first = _describe_line(rows, texts, 0)
    return (
        f"{source}: dates in column {column!r} read both day-first and month-first (no value has a day "
        f"above 12; {first} is {day_first.iloc[0]:%d %B} or {month_first.iloc[0]:%d %B})"
        f"{hint}. Pass --dayfirst or --monthfirst, or --time-format {dmy_fmt!r}"
    )


def _in_order(parsed: pd.Series) -> bool:
    values = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return bool(np.all(np.diff(values) >= 0))


def _raise_unreadable(
    texts: pd.Series,
    source: str,
    column: str,
    rows: np.ndarray,
    scored: list[tuple[float, str, str]],
    aware: bool,
) -> None:
    if scored:
        share, fmt, _ = max(scored, key=lambda item: item[0])
        parsed = _parse_with(texts, fmt, aware)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if share >= 0.5 and bad.size:
            i = int(bad[0])
            raise DataError(
                f"{source}: mixed time formats in column {column!r}: {_describe_line(rows, texts, i)} does "
                f"not match {fmt!r} of the other values ({bad.size} such line(s)); fix the export or "
                f"pass --time-format"
            )
    # Nothing fits the first value: find the first line no known format reads.
    for i in range(min(len(texts), 50)):
        if not any(_fits(fmt, texts.iloc[i]) for fmt, _ in CANDIDATES) and not _ISO.match(texts.iloc[i]):
            break
    else:
        i = 0
    hint = " (a units or description row under the header? pass --skip-rows)" if i < 3 else ""
    raise DataError(
        f"{source}: values in time column {column!r} are not timestamps in a known format: "
        f"{_describe_line(rows, texts, i)}{hint}; pass --time-format (e.g. '%d.%m.%Y %H:%M:%S') "
        f"or --time-column"
    )


def _examples(texts: pd.Series, index: pd.DatetimeIndex) -> list[tuple[str, str]]:
    """First, middle and last value as written and as read; only these three become text."""
    picks = sorted({0, len(texts) // 2, len(texts) - 1})
    return [(str(texts.iloc[i]), index[i].isoformat()) for i in picks]


def _check_zone(tz: str) -> None:
    try:
        pd.Timestamp("2026-01-01").tz_localize(tz)
    except Exception as exc:  # pytz/zoneinfo raise several types for an unknown name
        raise DataError(f"--tz: unknown time zone {tz!r} (use a name like Europe/Berlin or UTC)") from exc


def _to_utc(
    index: pd.DatetimeIndex, source: str, column: str, rows: np.ndarray, tz: str | None
) -> tuple[pd.DatetimeIndex, str]:
    if index.tz is not None:
        note = "UTC offsets in the data, converted to UTC"
        if tz is not None:
            note += f" (--tz {tz} not needed)"
        return index.tz_convert("UTC").as_unit("ns"), note
    if tz is None:
        return (
            index.tz_localize("UTC").as_unit("ns"),
            "no UTC offset in the data: taken as UTC; if these are plant local times pass --tz "
            "(e.g. --tz Europe/Berlin)",
        )
    return _localise(index, source, column, rows, tz), f"plant local time {tz} (--tz), converted to UTC"


def _localise(
    index: pd.DatetimeIndex, source: str, column: str, rows: np.ndarray, tz: str
) -> pd.DatetimeIndex:
    """Naive local times to UTC; the repeated hour of a daylight-saving change is resolved from
    the order of the rows, a time that does not exist locally is an error naming its line."""
    for ambiguous in ("raise", "infer"):
        try:
            local = index.tz_localize(tz, ambiguous=ambiguous, nonexistent="raise")
        except Exception:  # pandas raises pytz's or its own error types here, depending on version
            continue
        return local.tz_convert("UTC").as_unit("ns")
    unresolved = np.flatnonzero(np.asarray(index.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").isna()))
    i = int(unresolved[0]) if unresolved.size else 0
    raise DataError(
        f"{source}: line {rows[i]}: time {index[i]} in column {column!r} does not exist or is repeated in "
        f"{tz} (daylight-saving change) and the row order does not resolve it; export in UTC or with "
        f"UTC offsets"
    )


def _native(
    series: pd.Series, source: str, column: str, rows: np.ndarray, tz: str | None
) -> tuple[pd.DatetimeIndex, TimeParse]:
    index = pd.DatetimeIndex(series)
    bad = np.flatnonzero(index.isna())
    if bad.size:
        raise DataError(f"{source}: line {rows[bad[0]]} has no timestamp in column {column!r}")
    index, note = _to_utc(index, source, column, rows, tz)
    examples = _examples(series, index)  # three values as text, not the whole column (16 s per 1 M rows)
    return index, TimeParse(column, "native datetime column", "typed by the file", note, examples)


def _numeric(
    series: pd.Series, source: str, column: str, rows: np.ndarray, time_format: str | None, tz: str | None
) -> tuple[pd.DatetimeIndex, TimeParse]:
    numbers = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        raise DataError(
            f"{source}: line {rows[bad[0]]} ({series.iloc[int(bad[0])]!r}) in time column {column!r} "
            f"is not a number as {time_format or 'epoch'} times need ({bad.size} such line(s)); "
            f"check --time-format"
        )
    values = numbers.to_numpy()
    if time_format is None:
        time_format, reason = _numeric_kind(values)
    else:
        reason = "given with --time-format"
    if time_format == EXCEL_FORMAT:
        index = pd.DatetimeIndex(EXCEL_EPOCH + pd.to_timedelta(values, unit="D"))
        label = "Excel serial days (since 1899-12-30)"
    else:
        unit = EPOCH_FORMATS[time_format]
        try:
            index = pd.DatetimeIndex(pd.to_datetime(values, unit=unit, utc=True))
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            raise DataError(
                f"{source}: numbers in time column {column!r} are out of range as {time_format} "
                f"(e.g. {_describe_line(rows, series.astype('string'), 0)}); pass --time-format"
            ) from exc
        label = _EPOCH_LABELS[unit]
    index = index.tz_convert(None)
    index, note = _to_utc(index, source, column, rows, tz if time_format == EXCEL_FORMAT else None)
    if time_format != EXCEL_FORMAT:
        note = "epoch times are UTC"
    return index, TimeParse(column, f"{time_format} ({label})", reason, note, _examples(series, index))


def _numeric_kind(values: np.ndarray) -> tuple[str, str]:
    """Epoch unit by magnitude; Excel serial days when the numbers are days since 1900."""
    magnitude = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if 2e4 <= magnitude < 1e5 and values.size > 1 and float(np.median(np.diff(values))) < 1:
        return EXCEL_FORMAT, f"numbers near {magnitude:.0f} rising by less than 1 per row: Excel serial days"
    for unit, limit in (("epoch-ns", 1e17), ("epoch-us", 1e14), ("epoch-ms", 1e11)):
        if magnitude > limit:
            return unit, f"numbers up to {magnitude:.3g}: {unit}"
    if magnitude < 1e8:
        return "epoch-s", (
            f"numbers up to {magnitude:.3g}: read as seconds (too small for dates after 1973: "
            "elapsed seconds from 1970-01-01)"
        )
    return "epoch-s", f"numbers up to {magnitude:.3g}: epoch seconds"
