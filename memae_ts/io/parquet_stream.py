"""Reading a Parquet file or partitioned dataset a batch at a time, with the in-memory rules.

A plant's year of history does not fit in memory as a table (31.5 M rows × 20 sensors take
about 30 GB through pandas), but Parquet stores it in row groups that can be read one after
the other. This module is the part of streaming that `fit` and `score` share:

- `open_dataset` finds the files (a directory is a hive-partitioned dataset, read in the order
  pyarrow lists it, as `pd.read_parquet` does) and checks every file's footer and columns before
  anything long starts: a truncated or corrupt file, files that disagree on columns, and an empty
  dataset are one clear error each, naming the files;
- `Layout` decides once which columns are the time, sensors, machine and labels, from the first
  rows, with exactly the code `inspect` and the in-memory path use (`data.table_to_sensor_data`),
  and then turns every batch into numbers the same way (quality markers, `--na-values`, time
  format, time zone);
- `AssetTail` and `extend` apply the gap and forward-fill rules of `windows.segment` to each new
  piece of a machine's series by putting the last rows read before it (the context) in front, so
  filled values, stretches and windows are exactly those of the whole series in memory.

Streaming needs each machine's rows in time order (files, then row groups, then rows); a row
earlier than the one before it is an error naming the file, row group and machine. Repeated
timestamps keep their first reading, as in memory.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memae_ts.errors import DataError
from memae_ts.io.data import (
    ColumnRoles,
    DataWarning,
    SensorData,
    _label_values,
    _read_sensor,
    table_to_sensor_data,
)
from memae_ts.io.reading import RawTable, ReadOptions
from memae_ts.io.summary import EMPTY, DataSummary
from memae_ts.io.timeparse import EPOCH_FORMATS, EXCEL_FORMAT, parse_time_column
from memae_ts.io.windows import Segments, segment

SAMPLE_ROWS = 20_000  # the rows that decide which column is what (as `inspect` shows them)
# Peak bytes per table cell (rows × columns) of reading a whole Parquet file into memory and
# fitting on it, measured on 1 M rows × 21 columns (20 float sensors and a time column) with
# bench/fit_scale.py's data: +980 MB over the process with torch loaded, 47 bytes per cell.
IN_MEMORY_BYTES_PER_CELL = 48
# Peak bytes per cell while one record batch is turned into numbers and filled (Arrow batch,
# pandas frame, float64 values, marker masks, the filled copy and the windows cut from it).
BATCH_BYTES_PER_CELL = 128
# pyarrow holds about this many times a row group's uncompressed size while a batch of it is
# read (measured: 27 MB for a row group of 50,000 rows × 21 float64 columns, 8.4 MB).
READER_BYTES_PER_GROUP_BYTE = 3
MIN_BATCH_ROWS = 1024
MIN_MEMORY_LIMIT = 2**20
MAX_BATCH_ROWS = 1 << 20
READ_BUFFER_BYTES = 1 << 20  # pyarrow reads column chunks through a buffer of this size
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_INDEX_COLUMN = re.compile(r"^__index_level_\d+__$")


# ---------------------------------------------------------------------- memory limit
def parse_memory_limit(value: int | float | str | None) -> int:
    """`memory_limit` in bytes: a number of bytes, or '2GB', '512MB', '64MiB' (powers of 1024);
    None is the automatic limit (half of this machine's memory)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return auto_memory_limit()
    if isinstance(value, bool):
        raise DataError(f"memory_limit: expected bytes or a size like 2GB, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _SIZE.match(value)
        if match is None:
            raise DataError(f"--memory-limit: {value!r} is not a size; use e.g. 2GB, 512MB or 64MiB")
        number = float(match.group(1)) * 1024 ** "bkmgt".index((match.group(2) or "b").lower())
    if not math.isfinite(number) or number < MIN_MEMORY_LIMIT:
        raise DataError(f"--memory-limit: {value!r} is below the minimum of 1 MB")
    return int(number)


def auto_memory_limit() -> int:
    """Half of the memory this process may use: the machine's, or its container's limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total // 2


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


# ---------------------------------------------------------------------- the dataset
@dataclass(frozen=True)
class RowGroup:
    """One row group of one file, and where its rows sit in the dataset."""

    file: int  # index into ParquetDataset.files
    index: int  # row group within the file
    rows: int
    nbytes: int  # uncompressed size from the footer
    first_row: int  # position of its first row in the whole dataset (file order)


@dataclass(frozen=True)
class ParquetFile:
    path: str
    partition: dict[str, Any]  # hive partition keys from the directory names
    columns: tuple[str, ...]


@dataclass
class ParquetDataset:
    source: str
    files: list[ParquetFile]
    groups: list[RowGroup]
    columns: list[str]  # the files' columns, then the partition keys

    @property
    def rows(self) -> int:
        return sum(group.rows for group in self.groups)

    def estimated_in_memory_bytes(self) -> int:
        """What reading it whole and fitting would take (IN_MEMORY_BYTES_PER_CELL per cell)."""
        return self.rows * len(self.columns) * IN_MEMORY_BYTES_PER_CELL

    def describe(self) -> str:
        files = f"{len(self.files)} file(s), " if len(self.files) > 1 else ""
        return f"parquet ({files}{len(self.groups)} row group(s), streamed)"

    def where(self, group: RowGroup) -> str:
        """'file: row group N' for messages."""
        return f"{self.files[group.file].path}: row group {group.index}"

    def warn_large_row_groups(self, memory_limit: int) -> None:
        """Row groups are the file's, not ours: say so when reading one alone takes much of the
        limit, and what to do."""
        largest = max(group.nbytes for group in self.groups)
        need = READER_BYTES_PER_GROUP_BYTE * largest
        if need > memory_limit // 2:
            warnings.warn(
                f"{self.source}: its largest row group holds {format_bytes(largest)} of uncompressed "
                f"data; pyarrow needs about {format_bytes(need)} to read one, on top of the memory limit "
                f"of {format_bytes(memory_limit)}: write the files with smaller row groups "
                f"(row_group_size in pyarrow) for a tighter bound",
                DataWarning,
                stacklevel=3,
            )

    def batch_rows(self, budget: int) -> int:
        """Rows per record batch so that one batch in flight stays within `budget` bytes."""
        rows = budget // max(1, len(self.columns) * BATCH_BYTES_PER_CELL)
        return int(min(MAX_BATCH_ROWS, max(MIN_BATCH_ROWS, rows)))

    def read(
        self, group: RowGroup, columns: Sequence[str] | None, batch_rows: int
    ) -> Iterator[pd.DataFrame]:
        """The row group's rows as DataFrames of at most `batch_rows` rows (partition keys as
        columns); a damaged file is a DataError naming the file and the row group."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        info = self.files[group.file]
        wanted = None if columns is None else [c for c in columns if c not in info.partition]
        if wanted is not None and not wanted:
            # Only partition keys asked for: the footer knows the row count.
            yield _with_partition(pd.DataFrame(index=pd.RangeIndex(group.rows)), info, columns)
            return
        pool = pa.default_memory_pool()
        try:
            handle = pq.ParquetFile(info.path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
            batches = handle.iter_batches(
                batch_size=batch_rows, row_groups=[group.index], columns=wanted, use_threads=False
            )
            for batch in batches:
                frame = batch.to_pandas(ignore_metadata=True)
                frame = frame[[c for c in frame.columns if not _INDEX_COLUMN.match(str(c))]]
                frame.columns = [str(c).strip() for c in frame.columns]
                del batch
                yield _with_partition(frame, info, columns)
                # pyarrow's allocator (mimalloc) keeps freed pages for reuse; hand them back,
                # or the process grows by several row groups' worth (measured: +50 MB at 64 MB).
                pool.release_unused()
        except DataError:
            raise
        except Exception as exc:  # pyarrow raises OSError/ArrowInvalid/ArrowIOError for damage
            raise DataError(
                f"{self.where(group)}: cannot read (truncated or corrupt file?): {_one_line(exc)}"
            ) from exc


def _with_partition(frame: pd.DataFrame, info: ParquetFile, columns: Sequence[str] | None) -> pd.DataFrame:
    for key, value in info.partition.items():
        if columns is None or key in columns:
            frame[key] = pd.Series([value] * len(frame), dtype=object, index=frame.index)
    return frame.reset_index(drop=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def is_parquet_path(path: str | os.PathLike[str]) -> bool:
    """A Parquet file (by name or magic bytes) or a directory holding Parquet files."""
    from memae_ts.io.reading import is_parquet

    path = os.fspath(path)
    if path == "-" or not os.path.exists(path):
        return False
    try:
        return is_parquet(path)
    except OSError:
        return False


def open_dataset(path: str | os.PathLike[str]) -> ParquetDataset:
    """The files, row groups and columns of a Parquet file or directory, every footer checked."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    source = os.fspath(path)
    if not os.path.exists(source):
        raise DataError(f"{source}: file not found")
    partitions: list[tuple[str, dict[str, Any]]]
    if os.path.isdir(source):
        try:
            dataset = ds.dataset(source, format="parquet", partitioning="hive", exclude_invalid_files=False)
            partitions = [
                (fragment.path, dict(ds.get_partition_keys(fragment.partition_expression) or {}))
                for fragment in dataset.get_fragments()
            ]
        except Exception as exc:  # pyarrow names the damaged file in its message
            raise DataError(f"{source}: cannot read as a Parquet dataset: {_one_line(exc)}") from exc
        if not partitions:
            raise DataError(f"{source}: the dataset directory holds no Parquet files")
    else:
        partitions = [(source, {})]
    files: list[ParquetFile] = []
    groups: list[RowGroup] = []
    first_row = 0
    for file_path, partition in partitions:
        try:
            meta = pq.ParquetFile(file_path).metadata
            names = [n for n in meta.schema.to_arrow_schema().names if not _INDEX_COLUMN.match(n)]
        except Exception as exc:  # truncated: no footer; corrupt: a footer that does not parse
            raise DataError(
                f"{file_path}: not a readable Parquet file (truncated or corrupt?): {_one_line(exc)}"
            ) from exc
        columns = tuple(str(n).strip() for n in names) + tuple(k for k in partition if k not in names)
        files.append(ParquetFile(file_path, partition, columns))
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            groups.append(RowGroup(len(files) - 1, index, group.num_rows, group.total_byte_size, first_row))
            first_row += group.num_rows
    _check_same_columns(source, files)
    if first_row == 0:
        raise DataError(f"{source}: no data rows in {len(files)} Parquet file(s)")
    return ParquetDataset(source, files, [g for g in groups if g.rows > 0], list(files[0].columns))


def _check_same_columns(source: str, files: list[ParquetFile]) -> None:
    """`pd.read_parquet` fills a column missing from some files with nulls and drops columns
    only some files have, silently; a historian export that changed its tags is refused here."""
    reference = files[0]
    for other in files[1:]:
        if set(other.columns) == set(reference.columns):
            continue
        missing = [c for c in reference.columns if c not in other.columns]
        extra = [c for c in other.columns if c not in reference.columns]
        parts = [f"lacks {missing}"] if missing else []
        parts += [f"has {extra}"] if extra else []
        raise DataError(
            f"{source}: files disagree on columns: {other.path} {' and '.join(parts)}, compared with "
            f"{reference.path}; every file of a dataset needs the same columns"
        )


def check_dataset(path: str | os.PathLike[str]) -> None:
    """The dataset checks alone (footers, columns, rows): the in-memory reader runs them too."""
    open_dataset(path)


# ---------------------------------------------------------------------- columns and rows
@dataclass(frozen=True)
class Layout:
    """Which column is what, decided once from the first rows; how each batch is read."""

    source: str
    sensors: list[str]
    time_column: str | None
    time_format: str | None  # pinned, so every batch is read like the first
    asset_column: str | None
    label_column: str | None
    options: ReadOptions

    def columns(self) -> list[str]:
        return [c for c in (self.time_column, self.asset_column, self.label_column) if c] + self.sensors


@dataclass
class Rows:
    """One batch as numbers, rows in file order."""

    values: np.ndarray  # (n, sensors) float64, NaN = missing
    times: np.ndarray | None  # int64 ns UTC
    assets: np.ndarray | None  # object (str)
    labels: np.ndarray | None  # int8
    lines: np.ndarray  # dataset row position + 2 (the in-memory reader's numbering)
    missing: list[dict[str, int]] = field(default_factory=list)  # per sensor: marker -> cells

    def __len__(self) -> int:
        return int(self.lines.size)

    def take(self, keep: np.ndarray) -> Rows:
        return Rows(
            values=self.values[keep],
            times=None if self.times is None else self.times[keep],
            assets=None if self.assets is None else self.assets[keep],
            labels=None if self.labels is None else self.labels[keep],
            lines=self.lines[keep],
        )


def decide_layout(
    dataset: ParquetDataset, roles: ColumnRoles, options: ReadOptions, memory_limit: int
) -> tuple[Layout, DataSummary]:
    """Column roles from the first rows (SAMPLE_ROWS, fewer when the memory limit is small: the
    in-memory reader needs IN_MEMORY_BYTES_PER_CELL), by the in-memory reader's own rules.

    Returns the layout and the sample's summary (time format, ignored columns, suspected machine
    column), which the streaming passes complete with counts over the whole dataset.
    """
    cells = max(1, len(dataset.columns) * IN_MEMORY_BYTES_PER_CELL)
    wanted = int(min(SAMPLE_ROWS, max(MIN_BATCH_ROWS, memory_limit // 4 // cells)))
    pieces: list[pd.DataFrame] = []
    have = 0
    for group in dataset.groups:
        frames = dataset.read(group, None, wanted - have)
        pieces.append(next(frames))
        frames.close()
        have += len(pieces[-1])
        if have >= wanted:
            break
    frame = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
    table = RawTable(
        frame=frame,
        source=dataset.source,
        lines=np.arange(len(frame), dtype=np.int64) + 2,
        file_format=dataset.describe(),
    )
    with warnings.catch_warnings():
        # Markers and repeats in the sample are counted over the whole dataset later.
        warnings.simplefilter("ignore")
        sample = table_to_sensor_data(table, roles, options)
    summary = sample.summary
    time_format = None
    if sample.time_column is not None and summary.time is not None:
        time_format = pinned_time_format(str(summary.time["format"]))
    layout = Layout(
        source=dataset.source,
        sensors=list(sample.sensors),
        time_column=sample.time_column,
        time_format=time_format,
        asset_column=sample.asset_column,
        label_column=sample.label_column,
        options=options,
    )
    if summary.time is not None and len(frame) < dataset.rows:
        summary.time["reason"] = f"{summary.time['reason']}; from the first {len(frame)} rows"
    return layout, summary


def pinned_time_format(described: str) -> str | None:
    """The `--time-format` that reads later batches like the first ('native datetime column'
    needs none; 'epoch-ms (epoch milliseconds)' is 'epoch-ms')."""
    if described == "native datetime column":
        return None
    head = described.split(" ", 1)[0]
    if head in EPOCH_FORMATS or head == EXCEL_FORMAT:
        return head
    return described


def read_rows(layout: Layout, frame: pd.DataFrame, first_line: int) -> Rows:
    """One batch as numbers, by the in-memory reader's rules for each cell."""
    n = len(frame)
    lines = np.arange(first_line, first_line + n, dtype=np.int64)
    source = layout.source
    values = np.empty((n, len(layout.sensors)), dtype=np.float64)
    missing: list[dict[str, int]] = []
    na_values = tuple(layout.options.na_values)
    for j, column in enumerate(layout.sensors):
        read = _read_sensor(frame[column], False, na_values)
        if read is None:  # nothing in this batch: all missing
            values[:, j] = np.nan
            missing.append({EMPTY: n})
            continue
        column_values, _, counts, _ = read
        infinite = np.flatnonzero(np.isinf(column_values))
        if infinite.size:
            raise DataError(f"{source}: column {column!r} has infinite values at line {lines[infinite[0]]}")
        values[:, j] = column_values
        missing.append(counts)
    times = None
    if layout.time_column is not None:
        index, _ = parse_time_column(
            frame[layout.time_column],
            source=source,
            column=layout.time_column,
            rows=lines,
            time_format=layout.time_format,
            dayfirst=layout.options.dayfirst,
            tz=layout.options.tz,
        )
        times = index.as_unit("ns").asi8
    assets = None
    if layout.asset_column is not None:
        series = frame[layout.asset_column]
        if series.isna().any():
            line = lines[int(np.flatnonzero(series.isna().to_numpy())[0])]
            raise DataError(f"{source}: asset column {layout.asset_column!r} is empty at line {line}")
        assets = series.astype(str).str.strip().to_numpy(dtype=object)
    labels = None
    if layout.label_column is not None:
        labels = _label_values(frame[layout.label_column], source, lines, False)
    return Rows(values, times, assets, labels, lines, missing)


def merge_missing(total: dict[str, dict[str, int]], sensors: list[str], batch: list[dict[str, int]]) -> None:
    """Add one batch's per-sensor counts of missing cells (per marker) to the totals."""
    for sensor, counts in zip(sensors, batch, strict=True):
        into = total.setdefault(sensor, {})
        for marker, count in counts.items():
            into[marker] = into.get(marker, 0) + count


# ---------------------------------------------------------------------- order, per machine
def asset_groups(rows: Rows) -> list[tuple[str | None, np.ndarray]]:
    """(asset, row positions) for each machine in the batch, in order of first appearance."""
    if rows.assets is None:
        return [(None, np.arange(len(rows)))]
    codes, uniques = pd.factorize(rows.assets, sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return [(str(uniques[k]), order[bounds[k] : bounds[k + 1]]) for k in range(len(uniques))]


def in_time_order(
    times: np.ndarray | None,
    last_time: int | None,
    *,
    where: str,
    asset: str | None,
    lines: np.ndarray,
    hint: str,
) -> np.ndarray:
    """Which of one machine's rows to keep: all but repeats of the previous timestamp. A time
    earlier than the one before it is an error: streaming cannot sort what it has not read.
    `lines` are the rows' positions in the row group `where` names."""
    if times is None or times.size == 0:
        return np.ones(lines.size, dtype=bool)
    previous = np.concatenate([[times[0] if last_time is None else last_time], times[:-1]])
    back = np.flatnonzero(times < previous)
    if back.size:
        i = int(back[0])
        who = f"asset {asset!r}: " if asset is not None else ""
        raise DataError(
            f"{where}: {who}rows are not in time order: its row {lines[i]} "
            f"({pd.Timestamp(times[i], tz='UTC').isoformat()}) comes after "
            f"{pd.Timestamp(previous[i], tz='UTC').isoformat()}; {hint}"
        )
    keep = times != previous
    if last_time is None:
        keep[0] = True
    return keep


# ---------------------------------------------------------------------- windows across batches
@dataclass
class AssetTail:
    """The last rows read of one machine's series (raw, before filling): enough for the next
    rows' forward fill (max_fill rows back) and windows (window - 1 rows back)."""

    raw: np.ndarray  # (k, sensors) float64
    times: np.ndarray  # (k,) int64 ns; empty when the data has no time column
    next_row: int = 0  # the machine's row number (0-based, in time) of the next row
    last_time: int | None = None
    open_start: int | None = None  # first row of the stretch the last row belongs to

    @classmethod
    def empty(cls, sensors: int) -> AssetTail:
        return cls(np.empty((0, sensors)), np.empty(0, dtype=np.int64))

    def copy(self) -> AssetTail:
        return AssetTail(self.raw.copy(), self.times.copy(), self.next_row, self.last_time, self.open_start)

    def nbytes(self) -> int:
        return int(self.raw.nbytes + self.times.nbytes) + 64


@dataclass
class Piece:
    """The context rows and the new rows of one machine, filled; windows ending at new rows
    only use rows of `values`."""

    values: np.ndarray  # filled (k0 + m, sensors)
    segments: Segments  # in piece coordinates
    k0: int  # context rows in front of the new ones
    first_row: int  # the machine's row number of the first new row
    closed: list[tuple[int, int]]  # stretches [start, stop) (machine rows) that ended in this piece

    @property
    def new_rows(self) -> int:
        return int(self.values.shape[0] - self.k0)

    def row_of(self, machine_row: np.ndarray | int) -> Any:
        """Piece coordinate of a machine row number."""
        return machine_row - self.first_row + self.k0


def context_rows(window: int, max_fill: int) -> int:
    """Rows kept per machine: the fill of the first row of a window looks max_fill rows back."""
    return max(window - 1 + max_fill, max_fill + 1, 1)


def extend(
    tail: AssetTail,
    raw: np.ndarray,
    times: np.ndarray | None,
    *,
    sensors: list[str],
    source: str,
    keep: int,
    max_gap_seconds: float | None,
    max_fill_rows: int,
) -> Piece:
    """Segment the machine's new rows with `windows.segment`, exactly as over the whole series.

    Why this is exact: a filled value depends on at most `max_fill_rows` rows before it and a
    window on `window - 1` rows before its end, all of which the tail holds; a stretch that
    runs on from the previous piece keeps its start (`open_start`). Updates `tail` in place.
    """
    k0 = tail.raw.shape[0]
    values = np.concatenate([tail.raw, raw]) if k0 else raw
    all_times = None
    if times is not None:
        all_times = np.concatenate([tail.times, times]) if k0 else times
    data = SensorData(
        source=source,
        sensors=sensors,
        values=values,
        timestamps=None if all_times is None else pd.DatetimeIndex(all_times.astype("datetime64[ns]")),
        assets=None,
        labels=None,
        row_numbers=np.empty(0, dtype=np.int64),
    )
    segments = segment(data, max_gap_seconds=max_gap_seconds, max_fill_rows=max_fill_rows)
    n = values.shape[0]
    base = tail.next_row - k0  # machine row number of piece row 0
    closed: list[tuple[int, int]] = []
    pending = tail.open_start
    open_start: int | None = None
    for s, t in zip(segments.starts.tolist(), segments.stops.tolist(), strict=True):
        if t <= k0:
            continue  # lies in the context: counted when those rows were new
        if s < k0:  # runs on from the previous piece
            start = pending if pending is not None else base + s
        else:
            if pending is not None:
                closed.append((pending, base + k0))
            start = base + s
        pending = None
        if t < n:
            closed.append((start, base + t))
        else:
            open_start = start
    if pending is not None:
        closed.append((pending, base + k0))
    piece = Piece(segments.values, segments, k0, tail.next_row, closed)
    tail.raw = values[-keep:].copy() if n > keep else values.copy()
    if all_times is not None:
        tail.times = all_times[-keep:].copy()
        if raw.shape[0]:
            tail.last_time = int(all_times[-1])
    tail.next_row += raw.shape[0]
    tail.open_start = open_start
    return piece


def stretches_at_end(tail: AssetTail) -> list[tuple[int, int]]:
    """The stretch still open when a machine's rows end."""
    return [] if tail.open_start is None else [(tail.open_start, tail.next_row)]


@dataclass
class MachinePiece:
    """One machine's new rows in a batch, segmented with what came before them."""

    asset: str | None
    positions: np.ndarray  # positions in the batch of the machine's rows kept (repeats dropped)
    previous_time: int | None  # the machine's last time before these rows
    piece: Piece


def stream_pieces(
    dataset: ParquetDataset,
    layout: Layout,
    groups: Sequence[int],
    tails: dict[str | None, AssetTail],
    *,
    keep: int,
    max_gap_seconds: float | None,
    max_fill_rows: int,
    batch_rows: int,
    hint: str,
) -> Iterator[tuple[Rows, np.ndarray, list[MachinePiece]]]:
    """(rows, kept mask, machine pieces) batch by batch over the row groups `groups` (indices),
    each machine continuing from its tail in `tails` (a new machine starts empty); the order
    check and the dropping of repeated timestamps happen here."""
    n_sensors = len(layout.sensors)
    for g in groups:
        group = dataset.groups[g]
        line = group.first_row + 2
        for frame in dataset.read(group, layout.columns(), batch_rows):
            rows = read_rows(layout, frame, line)
            line += len(rows)
            kept = np.zeros(len(rows), dtype=bool)
            parts: list[MachinePiece] = []
            for asset, idx in asset_groups(rows):
                tail = tails.get(asset)
                if tail is None:
                    tail = tails[asset] = AssetTail.empty(n_sensors)
                times = None if rows.times is None else rows.times[idx]
                ok = in_time_order(
                    times,
                    tail.last_time,
                    where=dataset.where(group),
                    asset=asset,
                    lines=rows.lines[idx] - (group.first_row + 2),
                    hint=hint,
                )
                idx = idx[ok]
                kept[idx] = True
                if idx.size == 0:
                    continue
                previous = tail.last_time
                piece = extend(
                    tail,
                    rows.values[idx],
                    None if times is None else times[ok],
                    sensors=layout.sensors,
                    source=layout.source,
                    keep=keep,
                    max_gap_seconds=max_gap_seconds,
                    max_fill_rows=max_fill_rows,
                )
                parts.append(MachinePiece(asset, idx, previous, piece))
            yield rows, kept, parts
