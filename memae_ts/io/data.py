"""Reading sensor data into a checked, typed table, deciding once which columns are sensors.

Plant exports are messy: a timestamp column with any name and format, label columns next to the
sensors, text status columns, quality markers (`Bad`, `I/O Timeout`, `Shutdown`) inside sensor
columns, several machines in one file. This module decides once, in one place, what each column
is, records every decision in a `DataSummary`, and turns every problem into a `DataError` that
names the file, column, line and the option that fixes it, so a plant engineer never sees a
pandas traceback and nothing is dropped without a word.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from memae_ts.errors import DataError, DataWarning
from memae_ts.io.reading import RawTable, ReadOptions, read_table, sniff_separator
from memae_ts.io.summary import EMPTY, DataSummary
from memae_ts.io.timeparse import parse_time_column

__all__ = [
    "DEFAULT_LABEL_COLUMNS",
    "DataWarning",
    "ReadOptions",
    "SensorData",
    "array_to_sensor_data",
    "asset_rows",
    "frame_to_sensor_data",
    "load_csv",
    "load_data",
    "sniff_separator",
]

TIME_COLUMN_NAMES = ("timestamp", "datetime", "time", "date", "ts", "date_time", "time_stamp", "zeit")
DEFAULT_LABEL_COLUMNS = ("anomaly", "label", "changepoint")
FAULT_LABEL_COLUMNS = ("anomaly", "label")  # what `fit` reads as labelled faults when not told
MIN_NUMERIC_SHARE = 0.5  # a column with at least this share of numbers is a sensor with gaps
MAX_SILENT_DUPLICATE_SHARE = 0.01  # more repeated timestamps than this is an error, not a warning
MAX_ASSET_VALUES = 1000
ASSET_PROBE_ROWS = 20_000
DEFAULT_GAP_PERIODS = 3.0  # the gap rule's default (windows.py): steps beyond it split a series


@dataclass
class SensorData:
    """A sensor table after sorting by (asset, time).

    `values` keeps NaN where a reading is missing: the windowing step decides what to fill;
    `invalid` marks the cells that held a quality marker rather than nothing. `row_numbers`
    are the line numbers in the source file (header is line 1), so any later message can point
    back at the file.
    """

    source: str
    sensors: list[str]
    values: np.ndarray
    timestamps: pd.DatetimeIndex | None
    assets: np.ndarray | None
    labels: np.ndarray | None
    row_numbers: np.ndarray
    time_column: str | None = None
    asset_column: str | None = None
    label_column: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    n_source_rows: int = 0
    changepoints: np.ndarray | None = None  # a second 0/1 label column (SKAB's `changepoint`)
    invalid: np.ndarray | None = None
    positions: np.ndarray | None = None  # 0-based position of each row in the input
    summary: DataSummary = field(default_factory=lambda: DataSummary("<unknown>", "unknown"))

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class ColumnRoles:
    """What the caller fixed about the columns; everything None is detected."""

    time_column: str | None = None
    sensors: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    label_column: str | None = None
    asset_column: str | None = None
    changepoint_column: str | None = None
    require_labels: bool = False
    detect_labels: bool = False  # read an `anomaly`/`label` column as labels when not named
    drop_duplicates: bool = False  # allow dropping more than a small share of repeated times


def load_data(
    path: str | os.PathLike[str], roles: ColumnRoles | None = None, options: ReadOptions | None = None
) -> SensorData:
    """Read a CSV, Parquet file or directory, Excel sheet or `-` (stdin) into a SensorData."""
    options = options or ReadOptions()
    return table_to_sensor_data(read_table(path, options), roles or ColumnRoles(), options)


def load_csv(
    path: str | os.PathLike[str],
    *,
    time_column: str | None = None,
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    label_column: str | None = None,
    asset_column: str | None = None,
    sep: str | None = None,
    require_labels: bool = False,
    changepoint_column: str | None = None,
    options: ReadOptions | None = None,
    detect_labels: bool = False,
    drop_duplicates: bool = False,
) -> SensorData:
    """Read a sensor file (keyword form of `load_data`).

    `sensors` fixes the sensor columns (a trained model's); otherwise the mostly numeric columns
    are used, minus `exclude`, the time, asset and label columns (`anomaly`, `label`,
    `changepoint` are never inputs).
    """
    options = options or ReadOptions()
    if sep is not None:
        options = replace(options, sep=sep)
    roles = ColumnRoles(
        time_column=time_column,
        sensors=sensors,
        exclude=exclude,
        label_column=label_column,
        asset_column=asset_column,
        changepoint_column=changepoint_column,
        require_labels=require_labels,
        detect_labels=detect_labels,
        drop_duplicates=drop_duplicates,
    )
    return load_data(path, roles, options)


def frame_to_sensor_data(
    frame: pd.DataFrame,
    *,
    source: str = "<DataFrame>",
    time_column: str | None = None,
    sensors: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    label_column: str | None = None,
    asset_column: str | None = None,
    decimal_comma: bool = False,
    require_labels: bool = False,
    changepoint_column: str | None = None,
    options: ReadOptions | None = None,
    detect_labels: bool = False,
    drop_duplicates: bool = False,
) -> SensorData:
    """Same checks as `load_data` for a DataFrame already in memory (the Python API).

    A DataFrame indexed by time keeps its times: the index becomes the time column.
    """
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    if isinstance(frame.index, pd.DatetimeIndex) and (
        time_column is None or time_column not in frame.columns
    ):
        name = time_column or frame.index.name or "timestamp"
        if name in frame.columns:
            raise DataError(f"{source}: the time index is named {name!r} like a column; rename one")
        frame = frame.rename_axis(name).reset_index()
        time_column = name
    else:
        frame = frame.reset_index(drop=True)  # positions: results come back in input order
    frame.columns = [str(column) for column in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{source}: duplicate column names {duplicated}")
    table = RawTable(
        frame=frame,
        source=source,
        lines=np.arange(len(frame), dtype=np.int64) + 2,
        file_format="DataFrame",
        decimal="," if decimal_comma else ".",
    )
    roles = ColumnRoles(
        time_column=time_column,
        sensors=sensors,
        exclude=exclude,
        label_column=label_column,
        asset_column=asset_column,
        changepoint_column=changepoint_column,
        require_labels=require_labels,
        detect_labels=detect_labels,
        drop_duplicates=drop_duplicates,
    )
    return table_to_sensor_data(table, roles, options or ReadOptions())


def array_to_sensor_data(array: object, sensors: Sequence[str] | None = None) -> SensorData:
    """A 2-D numeric array: rows equally spaced in time, columns are the sensors (named x0, x1, …
    unless a model's sensors are given, matched by position).

    Nothing is guessed: a 1-D array could be one sensor or one row, so it is refused with the
    reshape that says which; complex numbers are refused rather than cut to their real part; an
    object array is accepted only if every cell is a number; a sparse matrix is refused."""
    if hasattr(array, "toarray") and hasattr(array, "nnz"):
        raise DataError(
            "<array>: sparse input is not supported (sensor readings are dense): pass X.toarray()"
        )
    values = np.asarray(array)
    if values.ndim == 1:
        raise DataError(
            f"<array>: expected a 2-D numeric array (rows × sensors), got a 1-D array of {values.size} "
            "values. Reshape your data: X.reshape(-1, 1) for one sensor, X.reshape(1, -1) for one row"
        )
    if values.dtype == object:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"<array>: expected a 2-D numeric array (rows × sensors): {exc}") from exc
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise DataError(
            f"<array>: expected a 2-D numeric array (rows × sensors), got shape {values.shape} "
            f"of {values.dtype}"
        )
    if np.issubdtype(values.dtype, np.complexfloating):
        raise DataError("<array>: Complex data not supported: sensor readings are real numbers")
    names = list(sensors) if sensors is not None else [f"x{j}" for j in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise DataError(
            f"<array>: X has {values.shape[1]} features, but MemAE is expecting {len(names)} features "
            f"as input (the model's sensors {names}, matched by position)"
        )
    frame = pd.DataFrame(values.astype(np.float64), columns=names)
    data = frame_to_sensor_data(frame, source="<array>", sensors=sensors)
    data.summary.file_format = "numpy array"
    return data


# ---------------------------------------------------------------------- the table's meaning
def table_to_sensor_data(table: RawTable, roles: ColumnRoles, options: ReadOptions) -> SensorData:
    frame, source, lines = table.frame, table.source, table.lines
    summary = DataSummary(
        source=source,
        file_format=table.file_format,
        rows_read=len(frame),
        encoding=table.encoding,
        separator=table.separator,
        decimal=table.decimal,
        skipped_rows=table.skipped_rows,
        blank_lines=table.blank_lines,
    )
    decimal_comma = table.decimal == ","
    time_column = (
        _find_column(frame, roles.time_column, source, "time", "--time-column")
        if roles.time_column is not None
        else detect_time_column(frame)
    )
    asset_column = (
        _find_column(frame, roles.asset_column, source, "asset", "--asset-column")
        if roles.asset_column is not None
        else None
    )
    label_column = roles.label_column
    if label_column is not None:
        label_column = _find_column(frame, label_column, source, "label", "--label-column")
    elif roles.require_labels:
        raise DataError(f"{source}: a label column is needed (--label-column)")
    elif roles.detect_labels:
        label_column = next((c for c in frame.columns if c.lower() in FAULT_LABEL_COLUMNS), None)
    changepoint_column = roles.changepoint_column
    if changepoint_column is not None:
        changepoint_column = _find_column(frame, changepoint_column, source, "label", "--changepoint-column")

    reserved = {c for c in (time_column, asset_column, label_column, changepoint_column) if c is not None}
    reserved |= {c for c in frame.columns if c.lower() in DEFAULT_LABEL_COLUMNS}
    excluded = {_find_column(frame, name, source, "excluded", "--exclude") for name in roles.exclude}
    na_values = tuple(options.na_values)

    sensor_names: list[str] = []
    columns: dict[str, tuple[np.ndarray, np.ndarray, dict[str, int]]] = {}
    if roles.sensors is not None:
        missing = [name for name in roles.sensors if name not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: sensor column(s) {missing} are missing; the model expects {list(roles.sensors)}"
            )
        sensor_names = list(roles.sensors)
        for column in sensor_names:
            read = _read_sensor(frame[column], decimal_comma, na_values)
            if read is None or read[3] < MIN_NUMERIC_SHARE:
                share = 0.0 if read is None else read[3]
                raise DataError(
                    f"{source}: column {column!r} is mostly text ({100 * (1 - share):.0f} % of its values "
                    f"are not numbers, e.g. {_text_examples(frame[column])}); the model needs readings there"
                )
            columns[column] = read[:3]
        extra = [
            c
            for c in frame.columns
            if c not in reserved
            and c not in excluded
            and c not in sensor_names
            and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if extra:
            warnings.warn(
                f"{source}: numeric column(s) {extra} are not used by the model and are ignored",
                DataWarning,
                stacklevel=2,
            )
            summary.ignored.extend([c, "not a sensor of the model"] for c in extra)
    else:
        for column in frame.columns:
            if column in reserved:
                continue
            if column in excluded:
                summary.ignored.append([column, "excluded (--exclude)"])
                continue
            read = _read_sensor(frame[column], decimal_comma, na_values)
            if read is None:
                summary.ignored.append([column, "empty: no values"])
            elif read[3] < MIN_NUMERIC_SHARE:
                summary.ignored.append(
                    [
                        column,
                        f"text: {100 * (1 - read[3]):.0f} % of its values are not numbers "
                        f"(e.g. {_text_examples(frame[column])})",
                    ]
                )
            else:
                sensor_names.append(column)
                columns[column] = read[:3]
        if not sensor_names:
            hint = (
                f"; one column only: is the separator {table.separator!r} right? pass --sep"
                if len(frame.columns) == 1 and table.separator is not None
                else ""
            )
            raise DataError(
                f"{source}: no numeric sensor columns found (columns: {list(frame.columns)}); "
                f"a sensor column needs numbers in at least half of its cells{hint}"
            )

    n = len(frame)
    values = np.empty((n, len(sensor_names)), dtype=np.float64)
    invalid = np.zeros((n, len(sensor_names)), dtype=bool)
    for j, column in enumerate(sensor_names):
        column_values, column_invalid, counts = columns.pop(column)  # one column in memory twice, not all
        infinite = np.flatnonzero(np.isinf(column_values))
        if infinite.size:
            raise DataError(f"{source}: column {column!r} has infinite values at line {lines[infinite[0]]}")
        if np.all(np.isnan(column_values)):
            raise DataError(f"{source}: sensor column {column!r} is empty")
        values[:, j] = column_values
        invalid[:, j] = column_invalid
        summary.missing[column] = counts
    _warn_markers(source, summary.missing)

    timestamps = None
    if time_column is not None:
        timestamps, parse = parse_time_column(
            frame[time_column],
            source=source,
            column=time_column,
            rows=lines,
            time_format=options.time_format,
            dayfirst=options.dayfirst,
            tz=options.tz,
        )
        summary.time = parse.to_dict()
    assets = None
    if asset_column is not None:
        asset_series = frame[asset_column]
        if asset_series.isna().any():
            line = lines[int(np.flatnonzero(asset_series.isna().to_numpy())[0])]
            raise DataError(f"{source}: asset column {asset_column!r} is empty at line {line}")
        assets = asset_series.astype(str).str.strip().to_numpy(dtype=object)
    labels = None
    if label_column is not None:
        labels = _label_values(frame[label_column], source, lines, decimal_comma)
    changepoints = None
    if changepoint_column is not None:
        changepoints = _label_values(frame[changepoint_column], source, lines, decimal_comma)

    summary.sensors = list(sensor_names)
    summary.asset_column = asset_column
    summary.label_column = label_column
    summary.labelled_rows = None if labels is None else int(labels.sum())
    data = SensorData(
        source=source,
        sensors=sensor_names,
        values=values,
        timestamps=timestamps,
        assets=assets,
        labels=labels,
        row_numbers=lines,
        time_column=time_column,
        asset_column=asset_column,
        label_column=label_column,
        ignored_columns=[column for column, _ in summary.ignored],
        n_source_rows=n,
        changepoints=changepoints,
        invalid=invalid,
        positions=np.arange(n, dtype=np.int64),
        summary=summary,
    )
    if asset_column is None and timestamps is not None:
        summary.suspected_asset = suspect_asset_column(frame, timestamps, exclude=reserved | excluded)
    data = _sorted_and_deduplicated(data, roles.drop_duplicates)
    describe_sampling(data)
    return data


def _find_column(frame: pd.DataFrame, name: str, path: str, what: str, option: str) -> str:
    if name in frame.columns:
        return name
    lowered = {column.lower(): column for column in frame.columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    raise DataError(f"{path}: {what} column {name!r} not found ({option}); columns are {list(frame.columns)}")


def detect_time_column(frame: pd.DataFrame) -> str | None:
    """A column named like a timestamp, else a datetime-typed column, else the first text column
    most of whose values look like dates."""
    for column in frame.columns:
        if column.lower() in TIME_COLUMN_NAMES:
            return column
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            return column
    for column in frame.columns:
        if _looks_like_time(frame[column]):
            return column
    return None


def _looks_like_time(series: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    sample = series.dropna().astype(str).head(50)
    if sample.empty:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", utc=True, format="mixed")
    return bool(parsed.notna().mean() >= 0.9)


def _read_sensor(
    raw: pd.Series, decimal_comma: bool, na_values: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, dict[str, int], float] | None:
    """Numbers of one column, the cells that held a marker, the count per marker (and of empty
    cells), and the share of numbers among the cells that are neither empty nor a listed marker;
    None for a column with no values at all."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        values = raw.astype("float64").to_numpy(copy=True)
        empty = np.isnan(values)
        given = np.zeros(len(values), dtype=bool)
        counts: dict[str, int] = {EMPTY: int(empty.sum())} if empty.any() else {}
        for marker in na_values:
            try:
                number = float(marker.replace(",", ".") if decimal_comma else marker)
            except ValueError:
                continue
            hit = values == number
            if hit.any():
                counts[marker] = int(hit.sum())
                given |= hit
        values[given] = np.nan
        if empty.all():
            return None
        return values, given, counts, 1.0 if (~empty & ~given).any() else 0.0
    text = raw.astype("string").str.strip()
    empty = (text.isna() | (text == "")).to_numpy(dtype=bool)
    if empty.all():
        return None
    given = text.isin(list(na_values)).fillna(False).to_numpy(dtype=bool)
    numeric_text = _decimal_comma_to_dot(text) if decimal_comma else text
    values = pd.to_numeric(numeric_text, errors="coerce").astype("float64").to_numpy(copy=True)
    values[given] = np.nan
    is_number = ~np.isnan(values)
    marked = ~empty & ~is_number
    counts = {EMPTY: int(empty.sum())} if empty.any() else {}
    for marker, count in text[marked].value_counts(sort=True).items():
        counts[str(marker)] = int(count)
    unlisted = int((~empty & ~given).sum())
    share = float(is_number.sum()) / unlisted if unlisted else 0.0
    return values, marked, counts, share


_GROUPED = r"^[-+]?\d{1,3}(?:\.\d{3})+(?:,\d+)?$"


def _decimal_comma_to_dot(text: pd.Series) -> pd.Series:
    """`1,5` → `1.5` and `1.234,5` → `1234.5` (a dot between groups of three digits before a
    decimal comma is a thousands separator)."""
    grouped = text.str.fullmatch(_GROUPED).fillna(False)
    if grouped.any():
        text = text.where(~grouped, text.str.replace(".", "", regex=False))
    return text.str.replace(",", ".", regex=False)


def _text_examples(raw: pd.Series) -> str:
    text = raw.dropna().astype(str).str.strip()
    numeric = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
    words = text[numeric.isna() & (text != "")].unique()[:3]
    return ", ".join(repr(w) for w in words) or "none"


def _warn_markers(source: str, missing: dict[str, dict[str, int]]) -> None:
    """Quality markers are read as missing values; the API user hears it here, the CLI user in the
    summary too."""
    parts = []
    for sensor, counts in missing.items():
        markers = {m: n for m, n in counts.items() if m != EMPTY}
        if markers:
            listed = ", ".join(f"{m!r} {n}" for m, n in list(markers.items())[:4])
            more = f" and {len(markers) - 4} more" if len(markers) > 4 else ""
            parts.append(f"{sensor!r}: {sum(markers.values())} ({listed}{more})")
    if parts:
        warnings.warn(
            f"{source}: quality markers read as missing values: {'; '.join(parts)}",
            DataWarning,
            stacklevel=3,
        )


def _label_values(column: pd.Series, source: str, rows: np.ndarray, decimal_comma: bool) -> np.ndarray:
    """0/1 labels (any positive value is 1); a missing label is an error naming its line."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        values = column.astype("float64").to_numpy()
    else:
        text = column.astype("string").str.strip()
        if decimal_comma:
            text = text.str.replace(",", ".", regex=False)
        values = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()
    if np.isnan(values).any():
        i = int(np.flatnonzero(np.isnan(values))[0])
        raise DataError(
            f"{source}: label column {column.name!r} has no 0/1 value at line {rows[i]} ({column.iloc[i]!r})"
        )
    return (values > 0).astype(np.int8)


def asset_rows(data: SensorData) -> list[np.ndarray]:
    """Row positions of each asset's series (one group of all rows when there is no asset)."""
    if data.assets is None:
        return [np.arange(len(data))]
    return [np.flatnonzero(data.assets == asset) for asset in pd.unique(data.assets)]


def take_rows(data: SensorData, order: np.ndarray) -> SensorData:
    """The rows at `order` (positions), every per-row array kept in step."""
    return replace(
        data,
        values=data.values[order],
        timestamps=None if data.timestamps is None else data.timestamps[order],
        assets=None if data.assets is None else data.assets[order],
        labels=None if data.labels is None else data.labels[order],
        changepoints=None if data.changepoints is None else data.changepoints[order],
        invalid=None if data.invalid is None else data.invalid[order],
        positions=None if data.positions is None else data.positions[order],
        row_numbers=data.row_numbers[order],
    )


# ---------------------------------------------------------------------- machines and order
def suspect_asset_column(
    frame: pd.DataFrame, timestamps: pd.DatetimeIndex, exclude: set[str]
) -> list[str] | None:
    """A low-cardinality column that looks like it names machines: grouping by it removes repeated
    timestamps, or each of its groups is sampled more slowly than the file as a whole (rows of two
    machines interleaved)."""
    times = pd.Series(timestamps.as_unit("ns").asi8)
    repeated = int(times.duplicated().sum())
    overall_step = _median_step(times.to_numpy())
    best: list[str] | None = None
    for column in frame.columns:
        if column in exclude:
            continue
        series = frame[column]
        head = series.iloc[:ASSET_PROBE_ROWS]  # most columns are readings: rule them out cheaply
        if head.nunique(dropna=True) > MAX_ASSET_VALUES:
            continue
        if pd.api.types.is_float_dtype(series) and not np.all(np.mod(head.dropna(), 1) == 0):
            continue
        distinct = series.nunique(dropna=True)
        if not 2 <= distinct <= min(MAX_ASSET_VALUES, max(2, len(series) // 10)):
            continue
        key = series.astype("string").fillna("")
        if repeated:
            left = int(pd.DataFrame({"t": times, "k": key}).duplicated().sum())
            if left <= repeated * 0.1:
                return [
                    column,
                    f"{distinct} values; with it, {repeated - left} repeated timestamp(s) are distinct",
                ]
            continue
        if overall_step is None or overall_step <= 0:
            continue
        steps = [
            _median_step(group.to_numpy())
            for _, group in times.groupby(key.to_numpy(), sort=False)
            if len(group) > 2
        ]
        steps = [s for s in steps if s is not None]
        if len(steps) >= 2 and min(steps) > 1.5 * overall_step:
            best = [
                column,
                f"{distinct} values, each sampled every {min(steps) / 1e9:.6g} s or slower while the file "
                f"has a reading every {overall_step / 1e9:.6g} s",
            ]
            break
    return best


def _median_step(ns: np.ndarray) -> float | None:
    if ns.size < 2:
        return None
    steps = np.diff(np.sort(ns))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


def _sorted_and_deduplicated(data: SensorData, drop_duplicates: bool) -> SensorData:
    """Order rows by (asset, time) and drop repeated timestamps, saying where and refusing to
    drop many (two machines in one file look exactly like that)."""
    summary = data.summary
    if data.timestamps is None:
        if data.assets is None:
            return data
        return take_rows(data, np.argsort(data.assets, kind="stable"))
    times = data.timestamps.as_unit("ns").asi8
    assets = data.assets if data.assets is not None else np.zeros(len(data), dtype=object)
    asset_codes, uniques = pd.factorize(assets, sort=False)
    summary.assets = len(uniques)
    order = np.lexsort((times, asset_codes))
    if not np.array_equal(order, np.arange(len(data))):
        if data.assets is None or not _sorted_within(times, asset_codes):
            summary.unsorted = True
            warnings.warn(
                f"{data.source}: rows are not in time order; sorted by {data.time_column!r}",
                DataWarning,
                stacklevel=4,
            )
        data = take_rows(data, order)
        asset_codes = asset_codes[order]
        times = data.timestamps.as_unit("ns").asi8  # type: ignore[union-attr]
    same = np.flatnonzero((np.diff(times) == 0) & (np.diff(asset_codes) == 0))
    if same.size:
        lines = ", ".join(str(data.row_numbers[i + 1]) for i in same[:5])
        share = same.size / len(data)
        if share > MAX_SILENT_DUPLICATE_SHARE and not drop_duplicates:
            raise DataError(_duplicates_message(data, same.size, share, lines))
        warnings.warn(
            f"{data.source}: {same.size} duplicate timestamp(s) in {data.time_column!r} "
            f"(e.g. line(s) {lines}); keeping the first reading of each",
            DataWarning,
            stacklevel=4,
        )
        summary.duplicates_dropped = int(same.size)
        keep = np.ones(len(data), dtype=bool)
        keep[same + 1] = False
        data = take_rows(data, np.flatnonzero(keep))
    return data


def _sorted_within(times: np.ndarray, codes: np.ndarray) -> bool:
    """True when each asset's rows are already in time order (interleaving is no disorder)."""
    frame = pd.DataFrame({"t": times, "k": codes})
    return bool(frame.groupby("k", sort=False)["t"].apply(lambda t: t.is_monotonic_increasing).all())


def _duplicates_message(data: SensorData, count: int, share: float, lines: str) -> str:
    summary = data.summary
    where = (
        f"{data.source}: {count} of {len(data)} rows ({100 * share:.1f} %) repeat a timestamp of "
        f"{data.time_column!r} (e.g. line(s) {lines})"
    )
    if summary.suspected_asset:
        column, why = summary.suspected_asset
        return (
            f"{where}: column {column!r} looks like it names machines ({why}); pass --asset-column {column}. "
            f"To drop the repeats anyway pass --drop-duplicates"
        )
    return (
        f"{where}: several machines in one file need --asset-column COLUMN; local times repeating at a "
        f"daylight-saving change need --tz; to drop the repeats anyway pass --drop-duplicates"
    )


# ---------------------------------------------------------------------- sampling
IRREGULAR_SHARE = 0.5  # fewer steps than this within 10 % of the median: irregular sampling
GAPPY_SHARE = 0.02  # more steps than this beyond 3 periods (and at least MIN_GAPS): bursts and silences
MIN_GAPS = 10


def describe_sampling(data: SensorData) -> None:
    """Time range, typical period and whether the sampling is regular, into the summary.

    Two kinds of irregular: steps of every length (few near the median), or regular bursts
    separated by many silences, which the 3-period gap rule cuts into pieces shorter than a
    window (a historian's by-exception archive looks like both)."""
    summary = data.summary
    if data.timestamps is None or len(data) == 0:
        return
    summary.first_time = data.timestamps.min().isoformat()
    summary.last_time = data.timestamps.max().isoformat()
    steps = np.diff(data.timestamps.as_unit("ns").asi8).astype(np.float64) / 1e9
    if data.assets is not None:
        steps = steps[data.assets[1:] == data.assets[:-1]]
    steps = steps[steps > 0]
    if steps.size == 0:
        return
    period = float(np.median(steps))
    summary.period_seconds = period
    regular = float(np.mean(np.abs(steps - period) <= 0.1 * period))
    gaps = int(np.sum(steps > DEFAULT_GAP_PERIODS * period))
    if regular >= IRREGULAR_SHARE and (gaps < MIN_GAPS or gaps <= GAPPY_SHARE * steps.size):
        summary.sampling = f"every {period:.6g} s ({100 * regular:.0f} % of steps within 10 % of it)"
        if gaps:
            summary.sampling += f"; {gaps} gap(s) over {DEFAULT_GAP_PERIODS:g} periods"
        return
    summary.irregular = True
    low, high = np.percentile(steps, [5, 95])
    summary.sampling = (
        f"IRREGULAR: median step {period:.6g} s, {100 * regular:.0f} % of steps within 10 % of it, "
        f"{gaps} of {steps.size} steps longer than {DEFAULT_GAP_PERIODS:g} periods (5-95 % of steps: "
        f"{low:.6g} s to {high:.6g} s); a historian export stored by exception? --resample PERIOD "
        f"puts it on a regular grid"
    )
