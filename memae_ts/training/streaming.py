"""`fit` on a Parquet file or dataset larger than memory, with memory bounded by a setting.

Why: a plant's year of 1 s history (31.5 M rows × 20 sensors) takes about 30 GB read whole.
`MemAE(memory_limit=...)` (`fit --memory-limit`, default half of the machine's memory) bounds
what a fit may hold; when the estimated in-memory size of a Parquet input is above it, `fit`
streams the data by row group instead of reading it whole:

1. **scan** (time, machine and label columns only): the order check (each machine's rows must be
   in time order), repeated timestamps, rows per machine — which fixes where each machine's
   held-out tail starts, as in memory (the last `validation_fraction` of its rows) — the time
   range and the median sampling period (which the gap rule needs before any segmenting);
2. **statistics** (all columns): quality markers and missing cells, the gap rule and forward fill
   of `windows.segment` over each machine's series (`parquet_stream.extend`: exact across batch
   boundaries), the stretches every window must lie in, the labelled rows, and the scaler's
   statistics on the training rows: exact streaming mean/std, or median/IQR of a bounded
   deterministic sample (every k-th training row);
3. **training**: the training windows are known as ranges of row numbers, so each epoch samples
   its windows uniformly over all of them (as in memory: a full pass, or `steps_per_epoch`
   batches), reads the row groups that hold them in a seeded random order, several side by side
   as memory allows, and draws batches from a bounded shuffle buffer that holds rows rather than
   windows (`WindowPool`). A row group read out of order starts from the machines' last rows
   before it, kept from pass 2. The held-out sample for early stopping and the threshold is
   read once, evenly spaced over the held-out windows. Under torchrun each rank reads its own
   share of the row groups and draws as many windows per epoch as every other rank.

Labelled faults are left out as in memory; the same seed and memory limit give the same bundle.
With the budget large enough, the scaler, the training windows and the held-out sample are
exactly those of the in-memory fit (tested); only the order of the windows differs.

Memory (`Budget`): record batches in flight (a quarter of the limit, shared by the row groups
read side by side), the window pool (an eighth), the held-out sample, the robust scaler's sample
and the saved machine tails (a sixteenth each); beyond the limit: the process itself (Python,
torch, the network) and pyarrow's buffers for each row group being read (about three times its
uncompressed size: `READER_BYTES_PER_GROUP_BYTE`), plus per-stretch bookkeeping (about 100 bytes
per gap in the data).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from memae_ts.errors import DataError, require_torch
from memae_ts.io.data import (
    DEFAULT_GAP_PERIODS,
    GAPPY_SHARE,
    IRREGULAR_SHARE,
    MIN_GAPS,
    ColumnRoles,
    DataWarning,
)
from memae_ts.io.parquet_stream import (
    MIN_BATCH_ROWS,
    READER_BYTES_PER_GROUP_BYTE,
    AssetTail,
    Layout,
    ParquetDataset,
    Piece,
    asset_groups,
    context_rows,
    decide_layout,
    format_bytes,
    in_time_order,
    is_parquet_path,
    merge_missing,
    open_dataset,
    parse_memory_limit,
    read_rows,
    stream_pieces,
    stretches_at_end,
)
from memae_ts.io.reading import ReadOptions
from memae_ts.io.summary import DataSummary
from memae_ts.training.scaling import Scaler, training_span

if TYPE_CHECKING:
    from memae_ts.estimator import MemAE

log = logging.getLogger(__name__)

LANES = 8  # at most this many units read side by side while training
MAX_STEP_VALUES = 100_000  # distinct sampling steps kept exactly; beyond, 0.1 % wide bins
SORT_HINT = "sort each machine's rows by time, or raise --memory-limit to read the data whole"


# ---------------------------------------------------------------------- when to stream
@dataclass(frozen=True)
class StreamingPlan:
    dataset: ParquetDataset
    memory_limit: int
    estimated_bytes: int

    def announcement(self) -> str:
        return (
            f"{self.dataset.source}: about {format_bytes(self.estimated_bytes)} in memory "
            f"({self.dataset.rows} rows × {len(self.dataset.columns)} columns) is more than the memory "
            f"limit of {format_bytes(self.memory_limit)} (--memory-limit): streaming it by row group"
        )


def streaming_plan(X: object, memory_limit: int | float | str | None) -> StreamingPlan | None:
    """A plan when X is a Parquet path whose estimated in-memory size exceeds the limit; None when
    it is read whole (anything else, or a Parquet input that fits)."""
    if not isinstance(X, str | os.PathLike) or not is_parquet_path(X):
        return None
    limit = _agreed(parse_memory_limit(memory_limit))
    dataset = open_dataset(X)
    estimated = dataset.estimated_in_memory_bytes()
    if estimated <= limit:
        return None
    return StreamingPlan(dataset, limit, estimated)


def _agreed(limit: int) -> int:
    """Under torchrun every process must stream or not alike, with the same budget: the
    smallest limit of all (machines may differ in memory). Needs the process group, which
    `fit` joins first; a process outside one decides alone."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return limit
    import torch

    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return limit
    value = torch.tensor([limit], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


@dataclass(frozen=True)
class Budget:
    """How the memory limit is shared out (bytes, rows, windows)."""

    limit: int
    batch_rows: int
    shuffle_bytes: int
    validation_windows: int
    robust_rows: int
    context_bytes: int
    lanes: int  # row groups read side by side in training (each needs pyarrow's buffers)

    @classmethod
    def plan(cls, limit: int, dataset: ParquetDataset, window: int, sensors: int, batch_size: int) -> Budget:
        from memae_ts.estimator import MAX_SCALER_ROWS, MAX_VALIDATION_WINDOWS

        window_bytes = window * sensors * 4
        largest = max(group.nbytes for group in dataset.groups)
        return cls(
            limit=limit,
            batch_rows=dataset.batch_rows(limit // 4),
            shuffle_bytes=max(2 * batch_size * window_bytes, limit // 8),
            # twice: the training loop keeps its own copy of its share
            validation_windows=max(10, min(MAX_VALIDATION_WINDOWS, limit // 16 // (2 * window_bytes))),
            robust_rows=max(1000, min(MAX_SCALER_ROWS, limit // 16 // (sensors * 8))),
            context_bytes=limit // 16,
            lanes=int(max(1, min(LANES, limit // 8 // max(1, READER_BYTES_PER_GROUP_BYTE * largest)))),
        )

    def to_config(self) -> dict[str, int]:
        return {
            "memory_limit": self.limit,
            "batch_rows": self.batch_rows,
            "shuffle_bytes": self.shuffle_bytes,
            "validation_windows": self.validation_windows,
            "robust_scaler_rows": self.robust_rows,
            "lanes": self.lanes,
        }


# ---------------------------------------------------------------------- sampling steps
class StepCounts:
    """Positive time steps within each machine as value -> count: the exact median, share and
    percentiles of `data.describe_sampling` without keeping every step. More than
    MAX_STEP_VALUES distinct steps (jittery by-exception data) switch to 0.1 %-wide bins."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.binned = False

    def add(self, steps_ns: np.ndarray) -> None:
        if steps_ns.size == 0:
            return
        if self.binned:
            steps_ns = _bin(steps_ns)
        values, counts = np.unique(steps_ns, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.counts[value] = self.counts.get(value, 0) + count
        if not self.binned and len(self.counts) > MAX_STEP_VALUES:
            self.binned = True
            merged: dict[int, int] = {}
            for value, count in zip(
                _bin(np.fromiter(self.counts, np.int64)).tolist(), self.counts.values(), strict=True
            ):
                merged[value] = merged.get(value, 0) + count
            self.counts = merged

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        values = np.fromiter(sorted(self.counts), dtype=np.int64, count=len(self.counts))
        counts = np.array([self.counts[v] for v in values.tolist()], dtype=np.int64)
        return values.astype(np.float64) / 1e9, counts

    def quantile(self, q: float) -> float:
        """np.percentile's linear interpolation over the expanded steps."""
        values, counts = self.arrays()
        position = q * (counts.sum() - 1)
        ends = np.cumsum(counts)
        low, high = math.floor(position), math.ceil(position)
        v_low = values[np.searchsorted(ends, low, side="right")]
        v_high = values[np.searchsorted(ends, high, side="right")]
        return float(v_low + (v_high - v_low) * (position - low))

    def total(self) -> int:
        return sum(self.counts.values())


def _bin(steps_ns: np.ndarray) -> np.ndarray:
    """The centre of the 0.1 %-wide logarithmic bin of each step."""
    index = np.floor(np.log(steps_ns.astype(np.float64)) / math.log1p(1e-3))
    return np.round(np.exp((index + 0.5) * math.log1p(1e-3))).astype(np.int64)


def describe_steps(summary: DataSummary, steps: StepCounts) -> None:
    """`data.describe_sampling` from step counts: typical period, regular or not."""
    if steps.total() == 0:
        return
    values, counts = steps.arrays()
    period = float(np.median(values)) if steps.total() == 1 else _median(values, counts)
    summary.period_seconds = period
    total = int(counts.sum())
    regular = float(counts[np.abs(values - period) <= 0.1 * period].sum() / total)
    gaps = int(counts[values > DEFAULT_GAP_PERIODS * period].sum())
    approx = " (steps binned to 0.1 %)" if steps.binned else ""
    if regular >= IRREGULAR_SHARE and (gaps < MIN_GAPS or gaps <= GAPPY_SHARE * total):
        summary.sampling = f"every {period:.6g} s ({100 * regular:.0f} % of steps within 10 % of it){approx}"
        if gaps:
            summary.sampling += f"; {gaps} gap(s) over {DEFAULT_GAP_PERIODS:g} periods"
        return
    summary.irregular = True
    low, high = steps.quantile(0.05), steps.quantile(0.95)
    summary.sampling = (
        f"IRREGULAR: median step {period:.6g} s, {100 * regular:.0f} % of steps within 10 % of it, "
        f"{gaps} of {total} steps longer than {DEFAULT_GAP_PERIODS:g} periods (5-95 % of steps: "
        f"{low:.6g} s to {high:.6g} s){approx}; a historian export stored by exception? --resample "
        f"PERIOD puts it on a regular grid (not while streaming: raise --memory-limit or resample first)"
    )


def _median(values: np.ndarray, counts: np.ndarray) -> float:
    total = int(counts.sum())
    ends = np.cumsum(counts)
    low = values[np.searchsorted(ends, (total - 1) // 2, side="right")]
    high = values[np.searchsorted(ends, total // 2, side="right")]
    return float(np.median([low, high]))


# ---------------------------------------------------------------------- pass 1: scan
@dataclass
class Scan:
    """What the time, machine and label columns say, before any value is read."""

    assets: list[str | None] = field(default_factory=list)  # machine names by first appearance
    rows: list[int] = field(default_factory=list)  # per machine, repeats dropped
    groups: list[list[tuple[int, int, int]]] = field(default_factory=list)  # (machine, first row, rows)
    rows_read: int = 0
    duplicates: int = 0
    duplicate_lines: list[int] = field(default_factory=list)
    first_time: int | None = None
    last_time: int | None = None
    steps: StepCounts = field(default_factory=StepCounts)
    labelled_rows: int | None = None


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, file=sys.stderr, leave=False)


def scan(dataset: ParquetDataset, layout: Layout, batch_rows: int, progress: bool) -> Scan:
    light = replace(layout, sensors=[])
    columns = [c for c in (layout.time_column, layout.asset_column, layout.label_column) if c]
    result = Scan(labelled_rows=0 if layout.label_column else None)
    codes: dict[str | None, int] = {}
    last: list[int | None] = []
    bar = _progress(dataset.rows, "scanning", progress)
    try:
        for group in dataset.groups:
            in_group: dict[int, list[int]] = {}
            line = group.first_row + 2
            for frame in dataset.read(group, columns, batch_rows):
                rows = read_rows(light, frame, line)
                line += len(rows)
                result.rows_read += len(rows)
                if rows.labels is not None and result.labelled_rows is not None:
                    result.labelled_rows += int(rows.labels.sum())
                for asset, idx in asset_groups(rows):
                    code = codes.setdefault(asset, len(codes))
                    if code == len(last):
                        last.append(None)
                        result.assets.append(asset)
                        result.rows.append(0)
                    times = None if rows.times is None else rows.times[idx]
                    keep = in_time_order(
                        times,
                        last[code],
                        where=dataset.where(group),
                        asset=asset,
                        lines=rows.lines[idx] - (group.first_row + 2),
                        hint=SORT_HINT,
                    )
                    dropped = np.flatnonzero(~keep)
                    if dropped.size:
                        result.duplicates += int(dropped.size)
                        result.duplicate_lines.extend(rows.lines[idx][dropped][:5].tolist())
                    kept = int(keep.sum())
                    span = in_group.setdefault(code, [result.rows[code], 0])
                    span[1] += kept
                    result.rows[code] += kept
                    if times is not None and kept:
                        kept_times = times[keep]
                        if last[code] is not None:
                            kept_times_from = np.concatenate([[last[code]], kept_times])
                        else:
                            kept_times_from = kept_times
                        result.steps.add(np.diff(kept_times_from))
                        last[code] = int(kept_times[-1])
                        low, high = int(kept_times.min()), int(kept_times.max())
                        result.first_time = low if result.first_time is None else min(result.first_time, low)
                        result.last_time = high if result.last_time is None else max(result.last_time, high)
                if bar is not None:
                    bar.update(len(rows))
            result.groups.append([(code, span[0], span[1]) for code, span in in_group.items() if span[1]])
    finally:
        if bar is not None:
            bar.close()
    return result


# ---------------------------------------------------------------------- pass 2: statistics
@dataclass
class Moments:
    """Count, mean and sum of squared deviations per sensor, merged batch by batch (Chan et al.)."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    # Smallest and largest value per sensor: the training range the edge daemon's drift metric
    # compares live readings with (memae_ts.training.training_range).
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        n = values.shape[0]
        if n == 0:
            return
        low, high = values.min(axis=0), values.max(axis=0)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def std(self) -> np.ndarray:
        assert self.m2 is not None
        return np.sqrt(self.m2 / self.count)


def _sensor_range(moments: Moments) -> dict[str, Any]:
    """``training.sensor_range`` of a streamed fit: over the training rows without a missing
    value (those of the scaler; as a whole fit, memae_ts.training.training_range)."""
    if moments.low is None or moments.high is None:
        return {}
    return {"sensor_range": {"min": moments.low.tolist(), "max": moments.high.tolist()}}


@dataclass
class Stats:
    """What the statistics pass learned about the whole dataset."""

    missing: dict[str, dict[str, int]]
    filled: np.ndarray
    unfilled: np.ndarray
    time_splits: int
    runs: list[list[tuple[int, int]]]  # per machine: stretches [start, stop) of row numbers
    labelled: list[list[tuple[int, int]]]  # per machine: labelled rows [start, stop)
    moments: Moments
    robust_sample: list[np.ndarray]
    contexts: list[dict[int, AssetTail]]  # per unit: each machine's tail before it
    fingerprint: str


def _runs(mask: np.ndarray, offset: int) -> list[tuple[int, int]]:
    """[start, stop) of the True runs of `mask`, shifted by `offset`."""
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return [(offset + int(a), offset + int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _append_runs(into: list[tuple[int, int]], runs: list[tuple[int, int]]) -> None:
    """Labelled rows as ranges, joining a range that continues the previous one."""
    for start, stop in runs:
        if into and into[-1][1] == start:
            into[-1] = (into[-1][0], stop)
        else:
            into.append((start, stop))


@dataclass(frozen=True)
class Rules:
    """The gap, fill, split and label rules of one fit."""

    window: int
    stride: int
    max_gap: float | None
    max_fill: int
    cuts: list[int]  # per machine: first held-out row number
    skip_labelled: bool  # windows touching labelled rows are left out
    robust_every: int  # every k-th training row goes into the robust scaler's sample
    robust: bool

    @property
    def keep(self) -> int:
        return context_rows(self.window, self.max_fill)

    def pieces(
        self, dataset: ParquetDataset, layout: Layout, unit: list[int], tails: Any, batch_rows: int
    ) -> Any:
        """`stream_pieces` of one unit of row groups under these gap and fill rules: the same
        call for the statistics pass and for reading the chosen windows, so both see the same
        pieces."""
        return stream_pieces(
            dataset,
            layout,
            unit,
            tails,
            keep=self.keep,
            max_gap_seconds=self.max_gap,
            max_fill_rows=self.max_fill,
            batch_rows=batch_rows,
            hint=SORT_HINT,
        )


def statistics(
    dataset: ParquetDataset,
    layout: Layout,
    scanned: Scan,
    units: list[list[int]],
    rules: Rules,
    batch_rows: int,
    progress: bool,
) -> Stats:
    s = len(layout.sensors)
    tails = {asset: AssetTail.empty(s) for asset in scanned.assets}
    codes = {asset: code for code, asset in enumerate(scanned.assets)}
    missing: dict[str, dict[str, int]] = {}
    filled = np.zeros(s, dtype=np.int64)
    unfilled = np.zeros(s, dtype=np.int64)
    time_splits = 0
    runs: list[list[tuple[int, int]]] = [[] for _ in scanned.assets]
    labelled: list[list[tuple[int, int]]] = [[] for _ in scanned.assets]
    moments = Moments()
    robust: list[np.ndarray] = []
    contexts: list[dict[int, AssetTail]] = []
    digest = hashlib.sha256(json.dumps(layout.sensors).encode())
    bar = _progress(dataset.rows, "statistics", progress)
    try:
        for unit in units:
            present = {code for g in unit for code, _, _ in scanned.groups[g]}
            contexts.append({code: tails[scanned.assets[code]].copy() for code in sorted(present)})
            batches = rules.pieces(dataset, layout, unit, tails, batch_rows)
            for rows, kept, parts in batches:
                merge_missing(missing, layout.sensors, rows.missing)
                for part in parts:
                    code, piece = codes[part.asset], part.piece
                    raw = rows.values[part.positions]
                    new = piece.values[piece.k0 :]
                    runs[code].extend(piece.closed)  # stretches may touch: a time gap splits them
                    filled += (np.isnan(raw) & ~np.isnan(new)).sum(axis=0)
                    unfilled += np.isnan(new).sum(axis=0)
                    if rows.times is not None and rules.max_gap is not None:
                        times = rows.times[part.positions]
                        if part.previous_time is not None:
                            times = np.concatenate([[part.previous_time], times])
                        time_splits += int(np.sum(np.diff(times) / 1e9 > rules.max_gap))
                    row_numbers = piece.first_row + np.arange(part.positions.size)
                    is_labelled = np.zeros(part.positions.size, dtype=bool)
                    if rows.labels is not None:
                        is_labelled = rows.labels[part.positions].astype(bool)
                        _append_runs(labelled[code], _runs(is_labelled, piece.first_row))
                    eligible = (row_numbers < rules.cuts[code]) & ~np.isnan(new).any(axis=1)
                    if rules.skip_labelled:
                        eligible &= ~is_labelled
                    moments.add(new[eligible])
                    if rules.robust:
                        robust.append(new[eligible & (row_numbers % rules.robust_every == 0)])
                digest.update(np.ascontiguousarray(rows.values[kept], dtype=np.float64).tobytes())
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    for asset, tail in tails.items():
        runs[codes[asset]].extend(stretches_at_end(tail))
    return Stats(
        missing=missing,
        filled=filled,
        unfilled=unfilled,
        time_splits=time_splits,
        runs=runs,
        labelled=labelled,
        moments=moments,
        robust_sample=robust,
        contexts=contexts,
        fingerprint=digest.hexdigest(),
    )


# ---------------------------------------------------------------------- which windows
@dataclass
class WindowSet:
    """Window ends as ranges: row numbers first, first + step, ... < stop of one machine, each
    range inside one unit (a run of row groups read together)."""

    unit: np.ndarray
    asset: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    step: int

    @classmethod
    def build(cls, ranges: list[tuple[int, int, int, int]], step: int) -> WindowSet:
        array = np.array(ranges, dtype=np.int64).reshape(-1, 4)
        return cls(array[:, 0], array[:, 1], array[:, 2], array[:, 3], step)

    def counts(self) -> np.ndarray:
        return np.maximum(0, (self.stop - self.first + self.step - 1) // self.step)

    def total(self) -> int:
        return int(self.counts().sum())

    def subset(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(self.unit[mask], self.asset[mask], self.first[mask], self.stop[mask], self.step)

    def at(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit, machine, end row) of the windows at sorted positions `indices` of the set."""
        bounds = np.cumsum(self.counts())
        which = np.searchsorted(bounds, indices, side="right")
        offset = indices - (bounds[which] - self.counts()[which])
        return self.unit[which], self.asset[which], self.first[which] + offset * self.step


def _subtract(first: int, stop: int, step: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ends first, first + step, ... < stop outside the holes [lo, hi), as ranges."""
    out: list[tuple[int, int]] = []
    current = first
    for lo, hi in holes:
        if hi <= current or lo >= stop:
            continue
        if lo > current:
            out.append((current, lo))
        current = _align(first, hi, step)
        if current >= stop:
            break
    if current < stop:
        out.append((current, stop))
    return [(a, b) for a, b in out if a < b]


def _align(first: int, lo: int, step: int) -> int:
    """The first end at or after lo on the grid first + k·step."""
    return first if lo <= first else first + -(-(lo - first) // step) * step


@dataclass
class Windows:
    train: WindowSet
    validation: WindowSet
    total: int
    touched: int
    longest: int


def choose_windows(stats: Stats, scanned: Scan, units: list[list[int]], rules: Rules) -> Windows:
    """Every window end (stride from each stretch's start), minus those touching labelled rows,
    split at each machine's held-out cut, and cut into ranges per unit."""
    unit_spans: list[list[tuple[int, int, int]]] = [[] for _ in scanned.assets]  # (unit, lo, hi)
    for u, unit in enumerate(units):
        spans: dict[int, list[int]] = {}
        for g in unit:
            for code, first, rows in scanned.groups[g]:
                span = spans.setdefault(code, [first, first + rows])
                span[1] = first + rows
        for code, (lo, hi) in spans.items():
            unit_spans[code].append((u, lo, hi))
    w = rules.window
    train: list[tuple[int, int, int, int]] = []
    validation: list[tuple[int, int, int, int]] = []
    total = kept = longest = 0
    for code, machine_runs in enumerate(stats.runs):
        # labelled rows [lo, hi) rule out the windows ending in [lo, hi + window - 1); both ends
        # rise from one range to the next, so bisection finds those near a stretch
        holes = [(lo, hi + w - 1) for lo, hi in stats.labelled[code]] if rules.skip_labelled else []
        hole_los, hole_his = [lo for lo, _ in holes], [hi for _, hi in holes]
        spans = unit_spans[code]
        span_his = [hi for _, _, hi in spans]
        cut = rules.cuts[code]
        for start, stop in machine_runs:
            longest = max(longest, stop - start)
            first = start + w - 1
            if first >= stop:
                continue
            total += (stop - first + rules.stride - 1) // rules.stride
            near = holes[bisect.bisect_right(hole_his, first) : bisect.bisect_left(hole_los, stop)]
            for lo, hi in _subtract(first, stop, rules.stride, near):
                kept += (hi - lo + rules.stride - 1) // rules.stride
                split = _align(lo, cut + w - 1, rules.stride)
                for into, a, b in ((train, lo, min(hi, cut)), (validation, split, hi)):
                    k = bisect.bisect_right(span_his, a)
                    while a < b and k < len(spans) and spans[k][1] < b:
                        u, span_lo, span_hi = spans[k]
                        x, y = max(a, span_lo), min(b, span_hi)
                        if x < y:
                            into.append((u, code, _align(a, x, rules.stride), y))
                        k += 1
    train_set = WindowSet.build(train, rules.stride)
    validation_set = WindowSet.build(validation, rules.stride)
    nonempty = train_set.counts() > 0
    return Windows(
        train_set.subset(nonempty),
        validation_set.subset(validation_set.counts() > 0),
        total,
        total - kept,
        longest,
    )


# ---------------------------------------------------------------------- pass 3: windows
def read_pieces(
    dataset: ParquetDataset,
    layout: Layout,
    assets: list[str | None],
    units: list[list[int]],
    contexts: list[dict[int, AssetTail]],
    wanted: dict[int, dict[int, np.ndarray]],
    order: list[int],
    rules: Rules,
    batch_rows: int,
) -> Iterator[tuple[int, Piece, np.ndarray]]:
    """(machine, piece, wanted end rows among its new rows) for the `wanted` windows (unit ->
    machine -> sorted end rows), unit by unit in `order`; each unit starts from the machines'
    tails saved before it, so its first windows reach back into the previous row group."""
    codes = {asset: code for code, asset in enumerate(assets)}
    for u in order:
        if u not in wanted:
            continue
        tails = {assets[code]: tail.copy() for code, tail in contexts[u].items()}
        batches = rules.pieces(dataset, layout, units[u], tails, batch_rows)
        for _, _, parts in batches:
            for part in parts:
                code = codes[part.asset]
                ends = _ends_in(part.piece, wanted[u].get(code))
                if ends.size:
                    yield code, part.piece, ends


def _clusters(piece: Piece, ends: np.ndarray, window: int, max_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first piece row, end positions from it) of runs of windows that share rows, each at most
    `max_rows` rows long: a window pool stores these rows once, not once per window."""
    at = piece.row_of(ends)
    breaks = np.flatnonzero(np.diff(at) >= window) + 1  # windows that share no row
    for group in np.split(at, breaks):
        for start in range(0, group.size, max(1, max_rows - window + 1)):
            part = group[start : start + max(1, max_rows - window + 1)]
            first = int(part[0]) - window + 1
            yield first, part - first


def _ends_in(piece: Piece, ends: np.ndarray | None) -> np.ndarray:
    """The wanted end rows that are new rows of this piece."""
    if ends is None or ends.size == 0:
        return np.empty(0, dtype=np.int64)
    lo = np.searchsorted(ends, piece.first_row, side="left")
    hi = np.searchsorted(ends, piece.first_row + piece.new_rows, side="left")
    return ends[lo:hi]


def _by_unit(units: np.ndarray, assets: np.ndarray, ends: np.ndarray) -> dict[int, dict[int, np.ndarray]]:
    """unit -> machine -> sorted end rows."""
    out: dict[int, dict[int, np.ndarray]] = {}
    order = np.lexsort((ends, assets, units))
    units, assets, ends = units[order], assets[order], ends[order]
    keys = np.flatnonzero(np.diff(units * (int(assets.max(initial=0)) + 1) + assets, prepend=-1))
    for k, start in enumerate(keys):
        stop = keys[k + 1] if k + 1 < keys.size else units.size
        out.setdefault(int(units[start]), {})[int(assets[start])] = ends[start:stop]
    return out


class WindowPool:
    """A bounded shuffle buffer that holds rows, not windows: runs of rows go in as read, and a
    batch is `batch_size` windows drawn at random from all the pool holds, cut when drawn.

    Why rows: windows one row apart share all but one row, so a buffer of windows holds
    `window` times fewer distinct windows than a buffer of rows of the same size, and its batches
    repeat nearly the same pattern (measured: a 256-window buffer lost 0.15 ROC-AUC on the demo
    data where a pool of the same bytes matched the in-memory fit). Rows are freed when the last
    window that needs them is drawn.
    """

    def __init__(self, capacity_bytes: int, batch_size: int, window: int, rng: np.random.Generator):
        self.capacity = capacity_bytes
        self.batch_size = batch_size
        self.window = window
        self.rng = rng
        self.chunks: dict[int, np.ndarray] = {}
        self.left: dict[int, int] = {}  # windows still to draw per chunk
        self.nbytes = 0
        self.next_id = 0
        self.chunk_of = np.empty(1024, dtype=np.int64)  # per window still in the pool
        self.end_of = np.empty(1024, dtype=np.int64)
        self.count = 0

    def add(self, rows: np.ndarray, ends: np.ndarray) -> Iterator[np.ndarray]:
        """Hold `rows` (float32, scaled) and the windows ending at positions `ends` of them."""
        chunk = self.next_id
        self.next_id += 1
        self.chunks[chunk], self.left[chunk] = rows, int(ends.size)
        self.nbytes += rows.nbytes
        need = self.count + ends.size
        if need > self.chunk_of.size:
            size = max(need, 2 * self.chunk_of.size)
            self.chunk_of = np.resize(self.chunk_of, size)
            self.end_of = np.resize(self.end_of, size)
        self.chunk_of[self.count : need] = chunk
        self.end_of[self.count : need] = ends
        self.count = need
        while self.nbytes >= self.capacity and self.count:
            yield self._pop()

    def drain(self) -> Iterator[np.ndarray]:
        while self.count:
            yield self._pop()

    def _pop(self) -> np.ndarray:
        k = min(self.batch_size, self.count)
        picks = np.sort(self.rng.choice(self.count, size=k, replace=False))
        chunks, ends = self.chunk_of[picks], self.end_of[picks]
        pairs = zip(chunks.tolist(), ends.tolist(), strict=True)
        out = np.stack([self.chunks[c][e - self.window + 1 : e + 1] for c, e in pairs])
        last = np.arange(self.count - k, self.count)
        movers = last[~np.isin(last, picks)]
        holes = picks[picks < self.count - k]
        self.chunk_of[holes] = self.chunk_of[movers]
        self.end_of[holes] = self.end_of[movers]
        self.count -= k
        for c in chunks.tolist():
            self.left[c] -= 1
            if self.left[c] == 0:
                self.nbytes -= self.chunks.pop(c).nbytes
                del self.left[c]
        return out


class StreamedWindows:
    """`train.WindowBatches` over a Parquet dataset: each epoch a uniform sample of this rank's
    training windows, read unit by unit in a seeded random order through a shuffle buffer."""

    def __init__(
        self,
        source: Streamed,
        windows: WindowSet,
        per_rank: int,
        batch_size: int,
        seed: int,
        rank: int,
    ) -> None:
        self.source = source
        self.windows = windows
        self.per_rank = per_rank
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    def steps(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        total = self.windows.total()
        picks = (
            np.arange(total)
            if self.per_rank >= total
            else np.sort(rng.choice(total, size=self.per_rank, replace=False))
        )
        units, assets, ends = self.windows.at(picks)
        wanted = _by_unit(units, assets, ends)
        order = [int(u) for u in rng.permutation(np.array(sorted(wanted), dtype=np.int64))]
        source = self.source
        window, n_sensors = source.rules.window, len(source.layout.sensors)
        pool = WindowPool(source.budget.shuffle_bytes, self.batch_size, window, rng)
        # LANES units are read side by side and go into the pool a short run of rows from each
        # in turn: the pool always holds windows from periods far apart, even when it is much
        # smaller than one row group.
        lanes = min(source.budget.lanes, len(order))
        rows = max(MIN_BATCH_ROWS, source.budget.batch_rows // max(lanes, 1))
        run = max(window, source.budget.shuffle_bytes // (2 * lanes * n_sensors * 4))
        readers = [self._runs(wanted, order[k::lanes], rows, run) for k in range(lanes)]
        while readers:
            for reader in list(readers):
                item = next(reader, None)
                if item is None:
                    readers.remove(reader)
                else:
                    yield from pool.add(*item)
        yield from pool.drain()

    def _runs(
        self, wanted: dict[int, dict[int, np.ndarray]], order: list[int], batch_rows: int, max_rows: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(scaled float32 rows, window end positions in them) of the wanted windows."""
        source = self.source
        center, scale = source.scaler.center, source.scaler.scale
        for _, piece, ends in source.pieces(wanted, order, batch_rows):
            for first, at in _clusters(piece, ends, source.rules.window, max_rows):
                rows = piece.values[first : first + int(at[-1]) + 1]
                yield ((rows - center) / scale).astype(np.float32), at


@dataclass
class Streamed:
    """A scanned dataset and its rules: what every later read of it needs."""

    dataset: ParquetDataset
    layout: Layout
    assets: list[str | None]
    units: list[list[int]]
    contexts: list[dict[int, AssetTail]]
    rules: Rules
    scaler: Scaler
    budget: Budget

    def pieces(
        self, wanted: dict[int, dict[int, np.ndarray]], order: list[int], batch_rows: int | None = None
    ) -> Iterator[tuple[int, Piece, np.ndarray]]:
        return read_pieces(
            self.dataset,
            self.layout,
            self.assets,
            self.units,
            self.contexts,
            wanted,
            order,
            self.rules,
            batch_rows or self.budget.batch_rows,
        )

    def gather(self, windows: WindowSet, picks: np.ndarray, progress: bool) -> np.ndarray:
        """The windows at sorted positions `picks` of `windows`, scaled, in that order."""
        units, assets, ends = windows.at(picks)
        wanted = _by_unit(units, assets, ends)
        out = np.empty((picks.size, self.rules.window, len(self.layout.sensors)), dtype=np.float32)
        # position of each (machine, end) in the output: picks are sorted by machine then row
        key_scale = int(ends.max(initial=0)) + 1
        keys = assets * key_scale + ends
        order = np.argsort(keys, kind="stable")
        bar = _progress(picks.size, "held-out sample", progress)
        offsets = np.arange(-self.rules.window + 1, 1, dtype=np.int64)
        filled = 0
        for code, piece, found in self.pieces(wanted, sorted(wanted)):
            filled += found.size
            at = order[np.searchsorted(keys[order], code * key_scale + found)]
            for start in range(0, found.size, self.budget.batch_rows):  # windows: `window` × the rows
                part = slice(start, start + self.budget.batch_rows)
                windows = piece.values[piece.row_of(found[part])[:, None] + offsets[None, :]]
                out[at[part]] = ((windows - self.scaler.center) / self.scaler.scale).astype(np.float32)
            if bar is not None:
                bar.update(found.size)
        if bar is not None:
            bar.close()
        if filled != picks.size:  # every window was found where the statistics pass put it
            raise RuntimeError(f"held-out sample: {filled} of {picks.size} windows read")
        return out


def _units(dataset: ParquetDataset, scanned: Scan, keep: int, sensors: int, budget: int) -> list[list[int]]:
    """Row groups read together as one unit: as many units as the saved machine tails allow
    within `budget` bytes (one tail per machine present per unit)."""
    per_tail = keep * (sensors * 8 + 8) + 64
    pairs = sum(len(g) for g in scanned.groups)
    if pairs * per_tail <= budget:
        size = 1
    else:
        size = math.ceil(pairs * per_tail / max(budget, 1))
    n = len(dataset.groups)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


# ---------------------------------------------------------------------- fit
def fit_streaming(
    model: MemAE,
    X: str | os.PathLike[str],
    *,
    plan: StreamingPlan | None = None,
    options: ReadOptions | None = None,
    drop_duplicates: bool = False,
    report: Callable[[str], None] | None = None,
) -> MemAE:
    """Fit `model` on the Parquet file or directory X by streaming it (see the module doc).

    `report` receives the data summary (what `fit` prints before training) once the statistics
    pass has read everything; `options` are the reading options (default: the model's).
    """
    require_torch()
    from memae_ts.training.train import distributed_from_env, train

    dist = distributed_from_env(model.device)
    if plan is None:
        dataset = open_dataset(X)
        limit = _agreed(parse_memory_limit(model.memory_limit))
        plan = StreamingPlan(dataset, limit, dataset.estimated_in_memory_bytes())
    _check_params(model, plan)

    def tell(text: str) -> None:  # rank 0 speaks: through `report` (the CLI prints), else the log
        if dist.is_main:
            report(text) if report is not None else log.info("%s", text)

    tell(plan.announcement())
    progress = bool(model.verbose) and dist.is_main
    read = _read_statistics(model, plan, options or model.read_options(), drop_duplicates, progress)
    tell(read.summary.format(short=True))
    windows = _windows_and_summary(model, read)
    source = plan.dataset.source
    held_out = windows.validation
    if held_out.total() < 10:
        warnings.warn(
            f"{source}: only {held_out.total()} held-out windows; the threshold is calibrated on "
            "training windows instead, which tends to set it too low. Provide more data.",
            DataWarning,
            stacklevel=2,
        )
        held_out = windows.train
    n_held, wanted = held_out.total(), read.budget.validation_windows
    picks = np.arange(n_held)  # evenly spaced over the held-out windows when more than wanted
    if n_held > wanted:
        picks = np.linspace(0, n_held - 1, wanted).round().astype(np.int64)
    scaler = _scaler(model, read)
    streamed = Streamed(
        plan.dataset,
        read.layout,
        read.scanned.assets,
        read.units,
        read.stats.contexts,
        read.rules,
        scaler,
        read.budget,
    )
    val_windows = streamed.gather(held_out, picks, progress)
    _log_peak(source, "held-out sample")

    spec, net = model._network(len(read.layout.sensors))
    per_epoch = min(windows.train.total(), model._windows_per_epoch())
    share, per_rank = rank_share(windows.train, len(read.units), per_epoch, dist.rank, dist.world, source)
    batches = StreamedWindows(streamed, share, per_rank, model.batch_size, model.seed, dist.rank)
    history = train(net, batches, val_windows, model._train_settings(), dist)
    _log_peak(source, "training")
    del batches

    config = model._bundle_config(
        read.summary,
        scaler,
        net,
        spec,
        history,
        max_gap=read.rules.max_gap,
        max_fill=model.max_fill,
        training={
            "data_source": os.path.basename(source.rstrip("/\\")),
            "data_fingerprint": read.stats.fingerprint,
            "n_rows": sum(read.scanned.rows),
            **_sensor_range(read.stats.moments),
            "n_train_windows": windows.train.total(),
            "n_val_windows": int(picks.size),
            "streaming": {
                **read.budget.to_config(),
                "units": len(read.units),
                "estimated_in_memory": plan.estimated_bytes,
            },
        },
    )

    def raw(part: slice) -> np.ndarray:  # the engine scales raw readings itself
        return val_windows[part].astype(np.float64) * scaler.scale + scaler.center

    return model._calibrate_and_finish(config, net, history, int(picks.size), raw)


def _check_params(model: MemAE, plan: StreamingPlan) -> None:
    """What the in-memory fit checks before reading, and what streaming cannot do."""
    source = plan.dataset.source
    if model.resample is not None:
        raise DataError(
            f"{source}: --resample needs the whole series in memory; resample the export first or "
            f"raise --memory-limit above {format_bytes(plan.estimated_bytes)}"
        )
    if not 0 < model.validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {model.validation_fraction}")
    if model.scaler not in ("standard", "robust"):
        raise DataError(f"unknown scaler {model.scaler!r}; choose one of ('standard', 'robust')")
    if model.window < 1 or model.stride < 1:
        raise DataError(f"window ({model.window}) and stride ({model.stride}) must be positive")


@dataclass
class _Read:
    """Everything the scan and statistics passes learned, and the rules they applied."""

    layout: Layout
    summary: DataSummary
    budget: Budget
    scanned: Scan
    rules: Rules
    units: list[list[int]]
    stats: Stats


def _read_statistics(
    model: MemAE, plan: StreamingPlan, options: ReadOptions, drop_duplicates: bool, progress: bool
) -> _Read:
    """Passes 1 and 2: column roles, order, counts, sampling period, gaps, fill, scaler data."""
    from memae_ts.io.data import MAX_SILENT_DUPLICATE_SHARE, _warn_markers

    dataset, source = plan.dataset, plan.dataset.source
    dataset.warn_large_row_groups(plan.memory_limit)
    roles = ColumnRoles(
        time_column=model.time_column,
        asset_column=model.asset_column,
        label_column=model.label_column,
        exclude=tuple(model.exclude),
        detect_labels=True,
        drop_duplicates=drop_duplicates,
    )
    layout, summary = decide_layout(dataset, roles, options, plan.memory_limit)
    budget = Budget.plan(plan.memory_limit, dataset, model.window, len(layout.sensors), model.batch_size)
    scanned = scan(dataset, layout, budget.batch_rows, progress)
    _log_peak(source, "scan")
    _summarise_scan(summary, scanned, layout)
    if scanned.duplicates:
        share = scanned.duplicates / scanned.rows_read
        lines = ", ".join(str(line) for line in scanned.duplicate_lines[:5])
        if share > MAX_SILENT_DUPLICATE_SHARE and not drop_duplicates:
            raise DataError(
                f"{source}: {scanned.duplicates} of {scanned.rows_read} rows ({100 * share:.1f} %) repeat "
                f"a timestamp of {layout.time_column!r} (e.g. line(s) {lines}): several machines in one "
                f"file need --asset-column COLUMN; to drop the repeats anyway pass --drop-duplicates"
            )
        warnings.warn(
            f"{source}: {scanned.duplicates} duplicate timestamp(s) in {layout.time_column!r} "
            f"(e.g. line(s) {lines}); keeping the first reading of each",
            DataWarning,
            stacklevel=3,
        )
    period = summary.period_seconds
    max_gap = model.max_gap
    if max_gap is None and period is not None and layout.time_column is not None:
        max_gap = DEFAULT_GAP_PERIODS * period  # the in-memory default: 3 sampling periods
    cuts = [round(n * (1 - model.validation_fraction)) for n in scanned.rows]
    rules = Rules(
        window=model.window,
        stride=model.stride,
        max_gap=max_gap,
        max_fill=model.max_fill,
        cuts=cuts,
        skip_labelled=layout.label_column is not None and not model.train_on_labelled,
        robust_every=max(1, math.ceil(sum(cuts) / budget.robust_rows)),
        # The sample also gives the training span when the span floor is on (standard scaler).
        robust=model.scaler == "robust" or model.min_span_scale > 0,
    )
    units = _units(dataset, scanned, rules.keep, len(layout.sensors), budget.context_bytes)
    stats = statistics(dataset, layout, scanned, units, rules, budget.batch_rows, progress)
    _log_peak(source, "statistics")
    summary.missing = {sensor: dict(stats.missing.get(sensor, {})) for sensor in layout.sensors}
    for sensor, counts in summary.missing.items():
        if sum(counts.values()) >= scanned.rows_read:
            raise DataError(f"{source}: sensor column {sensor!r} is empty")
    _warn_markers(source, summary.missing)
    return _Read(layout, summary, budget, scanned, rules, units, stats)


def _windows_and_summary(model: MemAE, read: _Read) -> Windows:
    """The training and held-out windows; what the gap rules and labels did, into the summary
    (as the in-memory fit's `gap_report` and labelled-fault note)."""
    source, layout, stats, rules = read.layout.source, read.layout, read.stats, read.rules
    windows = choose_windows(stats, read.scanned, read.units, rules)
    rows = sum(read.scanned.rows)
    lengths = np.array([b - a for machine in stats.runs for a, b in machine], dtype=np.int64)
    read.summary.gaps = {
        "window": model.window,
        "rows": rows,
        "segments": int(lengths.size),
        "rows_in_windows": int(lengths[lengths >= model.window].sum()),
        "max_gap_seconds": rules.max_gap,
        "max_fill": model.max_fill,
        "time_splits": stats.time_splits,
        "filled": {s: int(n) for s, n in zip(layout.sensors, stats.filled, strict=True) if n},
        "unfilled": {s: int(n) for s, n in zip(layout.sensors, stats.unfilled, strict=True) if n},
    }
    if windows.total == 0:
        raise DataError(
            f"{source}: no complete window of {model.window} rows: the data has {rows} rows and "
            f"its longest stretch without gaps or missing values is {windows.longest} rows. "
            f"Use a smaller --window, a larger --max-gap, or more data."
        )
    labelled = sum(b - a for machine in stats.labelled for a, b in machine)
    if labelled and model.train_on_labelled:
        read.summary.training = {
            "note": f"{labelled} labelled row(s) trained on as normal (--train-on-labelled)",
            "excluded_windows": 0,
        }
    elif labelled:
        note = (
            f"{windows.touched} of {windows.total} windows touch the {labelled} row(s) labelled "
            f"anomalous in {layout.label_column!r} and are left out of training and calibration "
            f"(--train-on-labelled keeps them)"
        )
        read.summary.training = {"note": note, "excluded_windows": windows.touched}
        if windows.touched == windows.total:
            raise DataError(f"{source}: every window touches a labelled row: {note}")
    if windows.train.total() == 0:
        raise DataError(f"{source}: too little data to train: no window before the validation split")
    return windows


def _scaler(model: MemAE, read: _Read) -> Scaler:
    """Standard: the exact streamed mean and std; robust: median and IQR of the sample. The span
    floor's 1st-99th percentile span comes from the same evenly spaced sample of training rows."""
    source, sensors, stats = read.layout.source, read.layout.sensors, read.stats
    sample = np.concatenate(stats.robust_sample) if stats.robust_sample else np.empty((0, len(sensors)))
    if model.scaler == "robust":
        if sample.shape[0] == 0:
            raise DataError(f"{source}: no training row without missing values to fit the scaler on")
        return Scaler.fit(
            sample,
            "robust",
            sensors,
            min_relative_scale=model.min_relative_scale,
            min_span_scale=model.min_span_scale,
        )
    if stats.moments.count == 0 or stats.moments.mean is None:
        raise DataError(f"{source}: no training row without missing values to fit the scaler on")
    return Scaler.from_statistics(
        "standard",
        stats.moments.mean,
        stats.moments.std(),
        sensors,
        model.min_relative_scale,
        model.min_span_scale,
        training_span(sample) if model.min_span_scale > 0 else None,
    )


def rank_share(
    train: WindowSet, n_units: int, per_epoch: int, rank: int, world: int, source: str
) -> tuple[WindowSet, int]:
    """This rank's training windows (those in every `world`-th unit) and how many it draws per
    epoch: the same number on every rank, so DistributedDataParallel's steps stay in step."""
    if world > n_units:
        raise DataError(
            f"{source}: {n_units} unit(s) of row groups cannot be shared by {world} processes; "
            f"write the Parquet files with smaller row groups"
        )
    shares = [train.subset(train.unit % world == r) for r in range(world)]
    per_rank = min(math.ceil(per_epoch / world), *(share.total() for share in shares))
    if per_rank == 0:
        raise DataError(f"{source}: a process under torchrun has no training window in its row groups")
    return shares[rank], per_rank


def _log_peak(source: str, stage: str) -> None:
    """The process's peak memory so far, after each pass (`memae-ts -v fit`)."""
    from memae_ts.peak_rss import peak_rss_bytes

    peak = peak_rss_bytes()
    log.debug("%s: %s done, peak RSS so far %.0f MB", source, stage, peak / 2**20)


def _summarise_scan(summary: DataSummary, scanned: Scan, layout: Layout) -> None:
    import pandas as pd

    summary.rows_read = scanned.rows_read
    summary.duplicates_dropped = scanned.duplicates
    summary.assets = len(scanned.assets)
    summary.labelled_rows = scanned.labelled_rows
    summary.unsorted = False
    if scanned.first_time is not None and scanned.last_time is not None:
        summary.first_time = pd.Timestamp(scanned.first_time, tz="UTC").isoformat()
        summary.last_time = pd.Timestamp(scanned.last_time, tz="UTC").isoformat()
    summary.period_seconds = None
    summary.sampling = None
    summary.irregular = False
    if layout.time_column is not None:
        describe_steps(summary, scanned.steps)
