"""Reading a plant export into a raw table, with every dialect decision recorded.

A historian export arrives as a CSV in whatever encoding and dialect the plant's PC uses
(Windows-1252, a UTF-16 "Unicode text" file from Excel, `;` with decimal commas, a units row
under the header), as Parquet from a data platform, or piped on stdin. This module only turns
bytes into a DataFrame of text or typed cells and remembers what it decided (encoding,
separator, decimal mark, skipped rows, each row's line in the file) so that `inspect` can show
it and later errors can point at the right line. Deciding what the columns mean is `data.py`'s
job.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memae_ts.errors import DataError

SEPARATORS = [",", ";", "\t", "|"]
PARQUET_SUFFIXES = (".parquet", ".pq")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?(?:\d+|\d{1,3}(?:\.\d{3})+),\d+(?:[eE][-+]?\d+)?\s*$")
_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file; each field is also a command-line option, each None is detected."""

    sep: str | None = None
    encoding: str | None = None
    skip_rows: int = 0
    na_values: tuple[str, ...] = ()
    time_format: str | None = None
    dayfirst: bool | None = None
    tz: str | None = None


@dataclass
class RawTable:
    """Cells as read, plus what was decided to read them."""

    frame: pd.DataFrame
    source: str
    lines: np.ndarray  # line in the file of each row (header = line 1)
    file_format: str  # csv, parquet, excel, DataFrame, numpy array
    encoding: str | None = None
    separator: str | None = None
    decimal: str = "."
    skipped_rows: int = 0
    blank_lines: int = 0
    notes: list[str] = field(default_factory=list)


def is_parquet(path: str) -> bool:
    if os.path.isdir(path):
        return any(name.endswith(PARQUET_SUFFIXES) for _, _, files in os.walk(path) for name in files)
    if path.lower().endswith(PARQUET_SUFFIXES):
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == b"PAR1"


def read_table(path: str | os.PathLike[str], options: ReadOptions | None = None) -> RawTable:
    """Read a CSV (any common dialect), Parquet file or directory, Excel sheet, or `-` (stdin)."""
    options = options or ReadOptions()
    path = os.fspath(path)
    if options.skip_rows < 0:
        raise DataError(f"--skip-rows must be 0 or more, got {options.skip_rows}")
    if path == "-":
        payload = sys.stdin.buffer.read()
        if not payload:
            raise DataError("<stdin>: no data on standard input")
        if payload[:4] == b"PAR1":
            return _parquet(io.BytesIO(payload), "<stdin>")
        return _csv(payload, "<stdin>", options)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        if is_parquet(path):
            return _parquet(path, path, check=True)
        raise DataError(f"{path}: is a directory without Parquet files, expected a CSV or Parquet file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    if path.lower().endswith(EXCEL_SUFFIXES):
        return _excel(path)
    if path.lower().endswith(".xls"):
        raise DataError(f"{path}: old Excel .xls files are not read; save the sheet as CSV or .xlsx")
    if is_parquet(path):
        return _parquet(path, path, check=True)
    with open(path, "rb") as handle:
        return _csv(handle.read(), path, options)


def _parquet(target: str | io.BytesIO, source: str, check: bool = False) -> RawTable:
    if check:
        from memae_ts.io.parquet_stream import check_dataset

        # Every footer, and the same columns in every file: pd.read_parquet would fill a column
        # some files lack with nulls and drop one only some have, without a word.
        check_dataset(source)
    try:
        frame = pd.read_parquet(target)
    except ImportError as exc:
        raise DataError(f"{source}: reading Parquet needs pyarrow: pip install pyarrow") from exc
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise DataError(f"{source}: cannot read as Parquet: {' '.join(str(exc).split())}") from exc
    frame = frame.reset_index() if _named_index(frame) else frame.reset_index(drop=True)
    return _finish(frame, source, np.arange(len(frame), dtype=np.int64) + 2, "parquet")


def _named_index(frame: pd.DataFrame) -> bool:
    """pandas writes a DataFrame's index into Parquet; a named or time index is data, not row numbers."""
    return frame.index.name is not None or isinstance(frame.index, pd.DatetimeIndex)


def _excel(path: str) -> RawTable:
    try:
        frame = pd.read_excel(path, sheet_name=0)
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Excel needs openpyxl: pip install openpyxl (or save as CSV)"
        ) from exc
    except Exception as exc:  # openpyxl raises zipfile/XML errors for a damaged workbook
        raise DataError(f"{path}: cannot read as an Excel workbook: {exc}") from exc
    return _finish(frame, path, np.arange(len(frame), dtype=np.int64) + 2, "excel (first sheet)")


def detect_encoding(payload: bytes) -> str:
    """From the byte-order mark when there is one (Excel's "Unicode text" is UTF-16), else UTF-8."""
    if payload.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if payload.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return "utf-8"


_DECODE_CHUNK = 4 * 2**20


def _check_decodes(payload: bytes, encoding: str, source: str, given: bool) -> None:
    """Every byte decodes, checked a few MB at a time (a whole decoded copy of a large file
    would double the memory of loading it)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError as exc:
        raise DataError(f"--encoding: unknown encoding {encoding!r} (e.g. utf-8, cp1252, latin-1)") from exc
    view = memoryview(payload)
    start = 0
    try:
        for start in range(0, len(payload), _DECODE_CHUNK):
            decoder.decode(view[start : start + _DECODE_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        position = min(start + exc.start, len(payload) - 1)
        line = payload.count(b"\n", 0, position) + 1
        byte = payload[position : position + 1].hex()
        if given:
            raise DataError(f"{source}: line {line} is not valid {encoding} (byte 0x{byte})") from exc
        raise DataError(
            f"{source}: line {line} is not UTF-8 (byte 0x{byte}); Windows exports are often "
            f"Windows-1252: pass --encoding cp1252 (or latin-1)"
        ) from exc


def sniff_separator(text: str) -> str:
    """The delimiter from the first lines: pandas' python sniffer is slow on big files."""
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        counts = {sep: lines[0].count(sep) for sep in SEPARATORS}
        best = max(counts, key=lambda sep: counts[sep])
        return best if counts[best] > 0 else ","


def _csv(payload: bytes, source: str, options: ReadOptions) -> RawTable:
    encoding = options.encoding or detect_encoding(payload)
    _check_decodes(payload, encoding, source, given=options.encoding is not None)
    head = payload[:_HEAD_BYTES].decode(encoding, errors="replace")
    separator = options.sep or sniff_separator(head)
    if separator == "\\t":
        separator = "\t"
    skip = options.skip_rows
    try:
        frame = pd.read_csv(
            _with_progress(payload, source),
            sep=separator,
            encoding=encoding,
            skipinitialspace=True,
            skiprows=range(1, 1 + skip) if skip else None,
            skip_blank_lines=False,  # kept so each row's line number is right; dropped below
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{source}: file has no header or data") from exc
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{source}: cannot parse as CSV with separator {separator!r}: {' '.join(str(exc).split())}; "
            f"pass --sep"
        ) from exc
    lines = np.arange(len(frame), dtype=np.int64) + 2 + skip
    blank = frame.isna().all(axis=1).to_numpy()
    table = _finish(frame[~blank], source, lines[~blank], "csv")
    table.encoding = encoding
    table.separator = separator
    table.skipped_rows = skip
    table.blank_lines = int(blank.sum())
    table.decimal = "," if uses_decimal_comma(table.frame, separator) else "."
    return table


PROGRESS_BYTES = 32 * 2**20  # files smaller than this load too fast for a progress bar


class _ProgressReader(io.BytesIO):
    """The file's bytes, advancing a progress bar as the CSV parser reads them."""

    def __init__(self, payload: bytes, bar: Any) -> None:
        super().__init__(payload)
        self._bar = bar

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._bar.update(len(chunk))
        return chunk

    def close(self) -> None:
        self._bar.close()
        super().close()


def _with_progress(payload: bytes, source: str) -> io.BytesIO:
    """A progress bar while a large file loads, on a terminal only (tqdm, when installed)."""
    if len(payload) < PROGRESS_BYTES or not sys.stderr.isatty():
        return io.BytesIO(payload)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return io.BytesIO(payload)
    bar = tqdm(
        total=len(payload),
        desc=f"reading {os.path.basename(source)}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        leave=False,
    )
    return _ProgressReader(payload, bar)


def _finish(frame: pd.DataFrame, source: str, lines: np.ndarray, file_format: str) -> RawTable:
    frame = frame.reset_index(drop=True)
    frame.columns = [str(column).strip() for column in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"{source}: duplicate column names {duplicated}")
    if len(frame) == 0:
        raise DataError(f"{source}: header only, no data rows")
    return RawTable(frame=frame, source=source, lines=lines, file_format=file_format)


def uses_decimal_comma(frame: pd.DataFrame, separator: str | None) -> bool:
    """`1,5` in a `;` or tab file is one and a half: most text cells of some column look like that."""
    if separator == ",":
        return False
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_string_dtype(series) or series.dtype == object:
            sample = series.dropna().astype(str).head(200)
            if len(sample) and sample.map(lambda v: bool(_DECIMAL_COMMA.match(v))).mean() > 0.5:
                return True
    return False
