"""Reading sensor CSVs into a checked, typed table.

Plant exports are messy: `;` or `,` separators, decimal commas, a timestamp column with any name,
label columns next to the sensors, text status columns. This module decides once, in one place,
which columns are sensors, and turns every problem into a `DataError` that names the file,
column and line, so a plant engineer never sees a pandas traceback.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from memae_ts.errors import DataError

TIME_COLUMN_NAMES = ("timestamp", "datetime", "time", "date", "ts", "date_time", "time_stamp")
DEFAULT_LABEL_COLUMNS = ("anomaly", "label", "changepoint")
_SEPARATORS = [",", ";", "\t", "|"]
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*$")


class DataWarning(UserWarning):
    """Something in the data was repaired or ignored; the message says what and where."""


@dataclass
class SensorData:
    """A sensor table in file order after sorting by (asset, time).

    `values` keeps NaN where a reading is missing: the windowing step decides what to fill.
    `row_numbers` are the 1-based line numbers in the source file (header is line 1), so any
    later message can point back at the file.
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

    def __len__(self) -> int:
        return int(self.values.shape[0])


def sniff_separator(path: str) -> str:
    """Pick the delimiter from the first lines: pandas' python sniffer is slow on big files."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        head = handle.read(64 * 1024)
    lines = [line for line in head.splitlines()[:50] if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(_SEPARATORS)).delimiter
    except csv.Error:
        counts = {sep: lines[0].count(sep) for sep in _SEPARATORS}
        best = max(counts, key=lambda sep: counts[sep])
        return best if counts[best] > 0 else ","


def _read_table(path: str, sep: str | None) -> tuple[pd.DataFrame, str]:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a CSV file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    separator = sep or sniff_separator(path)
    try:
        frame = pd.read_csv(path, sep=separator, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file has no header or data") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as CSV (separator {separator!r}): {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    frame.columns = [str(column).strip() for column in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{path}: duplicate column names {duplicated}")
    if len(frame) == 0:
        raise DataError(f"{path}: header only, no data rows")
    return frame, separator


def _find_column(frame: pd.DataFrame, name: str, path: str, what: str) -> str:
    if name in frame.columns:
        return name
    lowered = {column.lower(): column for column in frame.columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    raise DataError(f"{path}: {what} column {name!r} not found; columns are {list(frame.columns)}")


def _looks_like_time(series: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(series):
        return True
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    sample = series.dropna().astype(str).head(50)
    if sample.empty:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", utc=True, format="mixed")
    return bool(parsed.notna().mean() >= 0.9)


def detect_time_column(frame: pd.DataFrame) -> str | None:
    """A column named like a timestamp, else the first text column that parses as dates."""
    for column in frame.columns:
        if column.lower() in TIME_COLUMN_NAMES:
            return column
    for column in frame.columns:
        if _looks_like_time(frame[column]):
            return column
    return None


def _parse_times(series: pd.Series, path: str, column: str, rows: np.ndarray) -> pd.DatetimeIndex:
    if pd.api.types.is_numeric_dtype(series):
        # Epoch seconds (or milliseconds when the magnitude says so).
        numbers = series.astype("float64")
        unit = "ms" if numbers.abs().max() > 1e11 else "s"
        parsed = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        examples = ", ".join(f"line {rows[i]} ({series.iloc[i]!r})" for i in bad[:3])
        raise DataError(
            f"{path}: {bad.size} value(s) in time column {column!r} are not timestamps: {examples}"
        )
    return pd.DatetimeIndex(parsed)


def _to_numeric(series: pd.Series, decimal_comma: bool) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    text = series.astype("string").str.strip()
    if decimal_comma:
        text = text.str.replace(",", ".", regex=False)
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _mostly_numeric(series: pd.Series, decimal_comma: bool) -> bool:
    present = series.dropna()
    if present.empty:
        return False
    numeric = _to_numeric(present, decimal_comma)
    return bool(numeric.notna().mean() >= 0.9)


def _uses_decimal_comma(frame: pd.DataFrame, separator: str) -> bool:
    if separator == ",":
        return False
    for column in frame.columns:
        series = frame[column]
        if series.dtype == object or pd.api.types.is_string_dtype(series):
            sample = series.dropna().astype(str).head(50)
            if len(sample) and sample.map(lambda v: bool(_DECIMAL_COMMA.match(v))).mean() > 0.5:
                return True
    return False


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
) -> SensorData:
    """Read a sensor CSV.

    `sensors` fixes the sensor columns (a trained model's); otherwise the numeric columns are
    used, minus `exclude`, the time, asset and label columns (`anomaly`, `label`, `changepoint`
    are never inputs).
    """
    path = os.fspath(path)
    frame, separator = _read_table(path, sep)
    return frame_to_sensor_data(
        frame,
        source=path,
        time_column=time_column,
        sensors=sensors,
        exclude=exclude,
        label_column=label_column,
        asset_column=asset_column,
        decimal_comma=_uses_decimal_comma(frame, separator),
        require_labels=require_labels,
        changepoint_column=changepoint_column,
    )


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
) -> SensorData:
    """Same checks as `load_csv` for a DataFrame already in memory (the Python API)."""
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    frame = frame.reset_index(drop=True)  # positions, not labels: results come back in input order
    frame.columns = [str(column) for column in frame.columns]
    rows = np.arange(len(frame), dtype=np.int64) + 2  # line numbers: header is line 1

    if time_column is not None:
        time_column = _find_column(frame, time_column, source, "time")
    else:
        time_column = detect_time_column(frame)
    if asset_column is not None:
        asset_column = _find_column(frame, asset_column, source, "asset")
    if label_column is not None:
        label_column = _find_column(frame, label_column, source, "label")
    elif require_labels:
        raise DataError(f"{source}: a label column is needed (--label-column)")
    if changepoint_column is not None:
        changepoint_column = _find_column(frame, changepoint_column, source, "label")

    reserved = {c for c in (time_column, asset_column, label_column, changepoint_column) if c is not None}
    reserved |= {c for c in frame.columns if c.lower() in DEFAULT_LABEL_COLUMNS}
    excluded = {_find_column(frame, name, source, "excluded") for name in exclude}
    ignored: list[str] = []

    if sensors is not None:
        missing = [name for name in sensors if name not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: sensor column(s) {missing} are missing; the model expects {list(sensors)}"
            )
        sensor_names = list(sensors)
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
            ignored.extend(extra)
    else:
        sensor_names = []
        for column in frame.columns:
            if column in reserved or column in excluded:
                continue
            series = frame[column]
            if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                sensor_names.append(column)
            elif _mostly_numeric(series, decimal_comma):
                sensor_names.append(column)  # numeric column with a few bad cells: reported below
            else:
                ignored.append(column)
        if not sensor_names:
            raise DataError(f"{source}: no numeric sensor columns found (columns: {list(frame.columns)})")

    values = np.empty((len(frame), len(sensor_names)), dtype=np.float64)
    for j, column in enumerate(sensor_names):
        raw = frame[column]
        numeric = _to_numeric(raw, decimal_comma)
        bad = np.flatnonzero(numeric.isna().to_numpy() & raw.notna().to_numpy())
        if bad.size:
            examples = ", ".join(f"line {rows[i]} ({raw.iloc[i]!r})" for i in bad[:3])
            raise DataError(f"{source}: column {column!r} has {bad.size} non-numeric value(s): {examples}")
        column_values = numeric.to_numpy(dtype=np.float64)
        infinite = np.flatnonzero(np.isinf(column_values))
        if infinite.size:
            raise DataError(f"{source}: column {column!r} has infinite values at line {rows[infinite[0]]}")
        values[:, j] = column_values
        if np.all(np.isnan(column_values)):
            raise DataError(f"{source}: sensor column {column!r} is empty")

    timestamps = None
    if time_column is not None:
        timestamps = _parse_times(frame[time_column], source, time_column, rows)
    assets = None
    if asset_column is not None:
        asset_series = frame[asset_column]
        if asset_series.isna().any():
            line = rows[int(np.flatnonzero(asset_series.isna().to_numpy())[0])]
            raise DataError(f"{source}: asset column {asset_column!r} is empty at line {line}")
        assets = asset_series.astype(str).to_numpy(dtype=object)
    labels = None
    if label_column is not None:
        labels = _label_values(frame[label_column], source, rows, decimal_comma)
    changepoints = None
    if changepoint_column is not None:
        changepoints = _label_values(frame[changepoint_column], source, rows, decimal_comma)

    data = SensorData(
        source=source,
        sensors=sensor_names,
        values=values,
        timestamps=timestamps,
        assets=assets,
        labels=labels,
        row_numbers=rows,
        time_column=time_column,
        asset_column=asset_column,
        label_column=label_column,
        ignored_columns=ignored,
        n_source_rows=len(frame),
        changepoints=changepoints,
    )
    return _sorted_and_deduplicated(data)


def _take(data: SensorData, order: np.ndarray) -> SensorData:
    return replace(
        data,
        values=data.values[order],
        timestamps=None if data.timestamps is None else data.timestamps[order],
        assets=None if data.assets is None else data.assets[order],
        labels=None if data.labels is None else data.labels[order],
        changepoints=None if data.changepoints is None else data.changepoints[order],
        row_numbers=data.row_numbers[order],
    )


def _label_values(column: pd.Series, source: str, rows: np.ndarray, decimal_comma: bool) -> np.ndarray:
    """0/1 labels (any positive value is 1); a missing label is an error naming its line."""
    values = _to_numeric(column, decimal_comma).to_numpy()
    if np.isnan(values).any():
        line = rows[int(np.flatnonzero(np.isnan(values))[0])]
        raise DataError(f"{source}: label column {column.name!r} has no value at line {line}")
    return (values > 0).astype(np.int8)


def asset_rows(data: SensorData) -> list[np.ndarray]:
    """Row positions of each asset's series (one group of all rows when there is no asset)."""
    if data.assets is None:
        return [np.arange(len(data))]
    return [np.flatnonzero(data.assets == asset) for asset in pd.unique(data.assets)]


def _sorted_and_deduplicated(data: SensorData) -> SensorData:
    """Order rows by (asset, time) and drop repeated timestamps, saying where it happened."""
    if data.timestamps is None:
        if data.assets is None:
            return data
        order = np.argsort(data.assets, kind="stable")
        return _take(data, order)
    times = data.timestamps.as_unit("ns").asi8
    assets = data.assets if data.assets is not None else np.zeros(len(data), dtype=object)
    asset_codes, _ = pd.factorize(assets, sort=False)
    order = np.lexsort((times, asset_codes))
    if not np.array_equal(order, np.arange(len(data))):
        if data.assets is None:
            warnings.warn(
                f"{data.source}: rows are not in time order; sorted by {data.time_column!r}",
                DataWarning,
                stacklevel=3,
            )
        data = _take(data, order)
        asset_codes = asset_codes[order]
        times = data.timestamps.as_unit("ns").asi8  # type: ignore[union-attr]
    same = np.flatnonzero((np.diff(times) == 0) & (np.diff(asset_codes) == 0))
    if same.size:
        lines = ", ".join(str(data.row_numbers[i + 1]) for i in same[:5])
        warnings.warn(
            f"{data.source}: {same.size} duplicate timestamp(s) in {data.time_column!r} "
            f"(e.g. line(s) {lines}); keeping the first reading of each",
            DataWarning,
            stacklevel=3,
        )
        keep = np.ones(len(data), dtype=bool)
        keep[same + 1] = False
        data = _take(data, np.flatnonzero(keep))
    return data
