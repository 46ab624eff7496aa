"""`memae-ts score` on a Parquet dataset larger than memory: row group by row group.

Why: scoring a year of history reads it whole today (about 48 bytes per cell through pandas)
and builds its output table in memory too. When the estimated in-memory size is above the
memory limit (`score --memory-limit`, default half of the machine's memory), the data is read a
record batch at a time instead. Each machine's last rows before a batch go in front of it
(`parquet_stream.extend`), so forward fills, gap splits and windows are exactly those of the
whole series: every row gets the score the in-memory path gives it (the window ending at the
row; the first window-1 rows of each stretch have none). Rows come out in the order of the
input (the in-memory path sorts by machine, then time: the same order for a dataset stored
machine by machine). The output, Parquet when -o ends in .parquet or CSV, is written to a
temporary file beside the target and renamed at the end, so a failure leaves no half file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd

from memae_ts.detection.modes import Modes
from memae_ts.detection.scoring import RowScores, analyse_windows, score_windows, scores_frame
from memae_ts.errors import DataError
from memae_ts.io.data import MAX_SILENT_DUPLICATE_SHARE, ColumnRoles, DataWarning, SensorData, _warn_markers
from memae_ts.io.parquet_stream import (
    AssetTail,
    ParquetDataset,
    context_rows,
    decide_layout,
    format_bytes,
    is_parquet_path,
    merge_missing,
    open_dataset,
    parse_memory_limit,
    stream_pieces,
)
from memae_ts.io.reading import ReadOptions
from memae_ts.io.windows import window_ends

PARQUET_OUTPUT = (".parquet", ".pq")
SORT_HINT = "sort each machine's rows by time, or raise --memory-limit to read the data whole"


@dataclass
class Scored:
    rows: int = 0
    scored: int = 0
    flagged: int = 0
    duplicates: int = 0


def plan_scoring(path: str, memory_limit: int | str | None) -> tuple[ParquetDataset, int] | None:
    """(dataset, limit) when `path` is Parquet whose in-memory size is above the limit, else None."""
    if not is_parquet_path(path):
        return None
    limit = parse_memory_limit(memory_limit)
    dataset = open_dataset(path)
    return (dataset, limit) if dataset.estimated_in_memory_bytes() > limit else None


def score_parquet(
    model: Any,
    dataset: ParquetDataset,
    output: str | None,
    *,
    memory_limit: int,
    time_column: str | None = None,
    asset_column: str | None = None,
    label_column: str | None = None,
    options: ReadOptions | None = None,
    drop_duplicates: bool = False,
    progress: bool = False,
) -> Scored:
    """Score every row of `dataset` with a loaded model (`memae_ts.load`) into `output`
    (Parquet for .parquet, else CSV; None: CSV on standard output)."""
    config = model.bundle_.config
    if config.get("resample") is not None:
        raise DataError(
            f"{dataset.source}: the model resamples its input, which needs the whole series in memory; "
            f"raise --memory-limit above {format_bytes(dataset.estimated_in_memory_bytes())}"
        )
    dataset.warn_large_row_groups(memory_limit)
    roles = ColumnRoles(
        time_column=time_column or config.get("time_column"),
        asset_column=asset_column or config.get("asset_column"),
        label_column=label_column,
        sensors=list(model.sensors_),
        drop_duplicates=drop_duplicates,
    )
    layout, summary = decide_layout(dataset, roles, options or model.read_options(), memory_limit)
    extra = [column for column, why in summary.ignored if why == "not a sensor of the model"]
    if extra:  # as the in-memory reader says it
        warnings.warn(
            f"{dataset.source}: numeric column(s) {extra} are not used by the model and are ignored",
            DataWarning,
            stacklevel=2,
        )
    missing: dict[str, dict[str, int]] = {}
    window = int(config["window"])
    max_gap, max_fill = config["max_gap_seconds"], int(config["max_fill_rows"])
    keep = context_rows(window, max_fill)
    threshold = float(model.threshold_)
    n_sensors = len(layout.sensors)
    # Per batch: the rows, their windows (window x sensors each) and the output table.
    batch_rows = dataset.batch_rows(memory_limit // (4 + window // 16))
    tails: dict[str | None, AssetTail] = {}
    alarms = _StreamedAlarms(model.alarm_rule_, n_sensors)
    modes = Modes.of(model.bundle_)  # operating modes and novelty, as when read whole
    counts = Scored()
    bar = _progress(dataset.rows, progress)
    with _Output(output) as out:
        batches = stream_pieces(
            dataset, layout, range(len(dataset.groups)), tails, keep=keep, max_gap_seconds=max_gap,
            max_fill_rows=max_fill, batch_rows=batch_rows, hint=SORT_HINT,
        )
        for rows, kept, parts in batches:
            merge_missing(missing, layout.sensors, rows.missing)
            score = np.full(len(rows), np.nan)
            contributions = np.full((len(rows), n_sensors), np.nan)
            mode, novelty = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
            for part in parts:
                piece = part.piece
                ends = window_ends(piece.segments, window, 1)
                ends = ends[ends >= piece.k0]
                if ends.size and modes is not None:
                    at = part.positions[ends - piece.k0]
                    score[at], contributions[at], mode[at], novelty[at] = analyse_windows(
                        model.engine_, piece.values, ends, window, modes
                    )
                elif ends.size:
                    at = part.positions[ends - piece.k0]
                    score[at], contributions[at] = score_windows(model.engine_, piece.values, ends, window)
            counts.duplicates += int(len(rows) - kept.sum())
            result = RowScores(score[kept], score[kept] / threshold, contributions[kept], threshold)
            if modes is not None:
                result.mode, result.novelty = mode[kept], novelty[kept] / modes.novelty_threshold
                result.combine = modes.combine
            if model.tail_ is not None:
                result.tail_probability = model.tail_.tail_probability(result.score)
            batch = _batch_data(layout, rows.take(kept))
            result.alarm = alarms.step(batch, result)
            table = scores_frame(batch, result)
            out.write(table, None if rows.times is None else rows.times[kept])
            counts.rows += int(kept.sum())
            counts.scored += int(np.isfinite(result.score).sum())
            counts.flagged += int(result.is_anomaly.sum())
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        _warn_markers(dataset.source, missing)  # quality markers read as missing, counted
        if counts.duplicates:
            share = counts.duplicates / max(1, counts.rows + counts.duplicates)
            if share > MAX_SILENT_DUPLICATE_SHARE and not drop_duplicates:
                raise DataError(
                    f"{dataset.source}: {counts.duplicates} rows ({100 * share:.1f} %) repeat a timestamp of "
                    f"{layout.time_column!r}: several machines in one file need --asset-column COLUMN; "
                    f"to drop the repeats anyway pass --drop-duplicates"
                )
    return counts


class _StreamedAlarms:
    """The alarm rule across row groups: each asset's AlarmState (memae_ts.detection.alarms) carried from
    batch to batch, as in the daemon. A stretch starts at a scored row whose previous row of the
    same asset has no score: for windows of 2 rows or more that is exactly where a new series
    begins (two windows ending at neighbouring rows share rows, so lie in one series), which is
    what `scoring.score_rows` marks from the segments. Episodes are not collected here."""

    def __init__(self, rule: Any, n_sensors: int) -> None:
        from memae_ts.detection.alarms import AlarmTracker

        self.tracker = AlarmTracker(rule, n_sensors)
        self.last_scored: dict[str, bool] = {}

    def step(self, data: SensorData, result: RowScores) -> np.ndarray:
        from memae_ts.io.data import asset_rows

        alarm = np.zeros(len(result.score), dtype=bool)
        if data.timestamps is not None:
            times = data.timestamps.as_unit("ns").asi8 / 1e9
        else:
            times = np.asarray(data.row_numbers, dtype=np.float64)
        for rows in asset_rows(data):
            asset = "" if data.assets is None else str(data.assets[rows[0]])
            scored = np.isfinite(result.score[rows])
            before = np.concatenate([[self.last_scored.get(asset, False)], scored[:-1]])
            self.last_scored[asset] = bool(scored[-1])
            at = rows[scored]
            if at.size:
                starts = (scored & ~before)[scored]
                state = self.tracker.state(asset)
                events = state.run(times[at], result.alarm_level[at], result.contributions[at], starts)
                alarm[at] = events.alarm
        return alarm


def write_scores(table: pd.DataFrame, path: str, timestamps: pd.DatetimeIndex | None) -> None:
    """A scores table read whole, written as the streamed ones are: Parquet with typed times when
    `path` ends in .parquet, else CSV; through a temporary file renamed into place."""
    with _Output(path) as out:
        out.write(table, None if timestamps is None else timestamps.as_unit("ns").asi8)


def _batch_data(layout: Any, rows: Any) -> SensorData:
    """The batch as the SensorData `scoring.scores_frame` formats."""
    return SensorData(
        source=layout.source,
        sensors=layout.sensors,
        values=rows.values,
        timestamps=None if rows.times is None else pd.DatetimeIndex(pd.to_datetime(rows.times, utc=True)),
        assets=rows.assets,
        labels=rows.labels,
        row_numbers=rows.lines,
    )


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="scoring", unit="row", unit_scale=True, file=sys.stderr, leave=False)


class _Output:
    """Scores table by table into Parquet or CSV: a temporary file renamed into place on success
    (standard output when there is no path)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.parquet = path is not None and path.lower().endswith(PARQUET_OUTPUT)
        self.tmp: str | None = None
        self.handle: IO[str] | None = None
        self.writer: Any = None
        self.header = True

    def __enter__(self) -> _Output:
        if self.path is None:
            self.handle = sys.stdout
            return self
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DataError(f"{self.path}: the directory {directory} does not exist")
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=".scores-", suffix=".tmp")
        os.close(fd)
        if not self.parquet:
            self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
        return self

    def write(self, table: pd.DataFrame, times: np.ndarray | None) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if times is not None:  # typed times in Parquet, not text
                table = table.assign(timestamp=pd.to_datetime(times, utc=True))
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.tmp, arrow.schema)
            self.writer.write_table(arrow.cast(self.writer.schema))
            return
        assert self.handle is not None
        table.to_csv(self.handle, index=False, header=self.header, float_format="%.6g")
        self.header = False

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            if self.handle is not None and self.handle is not sys.stdout:
                self.handle.close()
            elif self.handle is sys.stdout:
                sys.stdout.flush()
        finally:
            if self.tmp is not None:
                if error is None:
                    os.replace(self.tmp, str(self.path))
                else:
                    os.unlink(self.tmp)


def score_if_too_large(args: argparse.Namespace) -> bool:
    """The `memae-ts score` branch: stream a Parquet input larger than --memory-limit and say
    so; False (nothing done) for anything read whole."""
    plan = plan_scoring(args.csv, getattr(args, "memory_limit", None))
    if plan is None:
        return False
    from memae_ts.cli.commands.common import read_options
    from memae_ts.estimator import load

    dataset, limit = plan
    print(
        f"{dataset.source}: about {format_bytes(dataset.estimated_in_memory_bytes())} in memory is more "
        f"than the memory limit of {format_bytes(limit)} (--memory-limit): scoring it by row group",
        file=sys.stderr,
    )
    model = load(args.model, engine=args.engine)
    counts = score_parquet(
        model,
        dataset,
        args.output,
        memory_limit=limit,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_column=args.label_column,
        options=read_options(args, model.bundle_.config.get("reading")),
        drop_duplicates=args.drop_duplicates,
        progress=True,
    )
    where = args.output or "standard output"
    print(
        f"scored {counts.scored} of {counts.rows} rows with the {model.engine_.name} engine; "
        f"{counts.flagged} flagged as anomalous; written to {where}",
        file=sys.stderr,
    )
    return True
