"""Live resampling: readings of each asset, as they arrive, onto the grid of the offline rules.

Why here and not in the buffers: a model fitted with ``--resample`` was trained on grid rows,
so the daemon must feed its window buffers the same grid rows ``memae_ts.io.resample`` makes
offline (the rules are written there). :class:`StreamResampler` keeps, per asset, only what a
future grid row can still need and turns each batch of readings into the grid rows those
readings decide; :class:`ResampledBuffers` puts it in front of :class:`WindowBuffers` with the
windowing offline uses after resampling (a NaN grid row splits the series, nothing else does).

Live readings carry no quality markers: ``null`` is "no new reading of that sensor".

When a grid row is emitted
    ``hold``: grid point ``g`` as soon as a reading at a time ``>= g`` has arrived (no later
    reading can be at or before ``g``). ``interpolate``: once every sensor's value at ``g`` is
    decided: a valid reading of that sensor at or after ``g`` has arrived, or the newest
    reading is at least ``limit`` after the sensor's last valid one (any later reading would be
    too far away to interpolate with), or the sensor has no usable reading before ``g``. So with
    ``interpolate`` a quiet sensor delays the rows by up to ``limit``: that is the price of
    knowing the next value. The last grid points no reading has decided yet stay pending.

What differs from offline, on purpose
    * A run of grid rows in which every sensor is NaN comes out as one NaN row (at the run's
      first grid time): a NaN row splits the series either way, so the windows are the same,
      and a silence of a week does not become a week of empty rows.
    * Times are taken to the microsecond (what a float64 epoch second carries); a resampled
      model needs them between the years 1824 and 2116 (else ``bad_timestamp``).
    * A reading that is not later than the asset's newest one is refused (``time_backwards``),
      whatever ``backwards_tolerance_seconds`` says: a grid point may already have been emitted
      without it, and putting it after the newest would let an older value replace a newer one.
      Offline, such a reading is sorted into place; of a repeated timestamp both keep the first.

Offsets and the rebuild point
    Each grid row carries the smallest Kafka offset among the readings its values come from, so
    the window buffers' rebuild point covers the readings a rebuilt row needs; the readings the
    resampler still holds for future rows are part of the rebuild point too
    (:meth:`StreamResampler.needed_offset`). Replaying from there into a fresh state gives the
    same grid rows from the first one a window still needs, and each row keeps the reading that
    emitted it (``trigger``), which decides whether a replayed row was scored before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from memae_ts.connectors.buffers import Extended, WindowBuffers
from memae_ts.connectors.messages import InvalidMessage

from memae_ts.io.resample import TIME_LIMIT_NS, ResampleSpec, resample_cells

_TS_LIMIT_SECONDS = TIME_LIMIT_NS / 1e9
_NONE = np.iinfo(np.int64).min  # "no valid reading" in per-sensor times
_MAX = np.iinfo(np.int64).max
_NO_ROWS = np.empty(0, dtype=np.int64)


@dataclass(slots=True)
class GridRows:
    """What :meth:`StreamResampler.extend` made of one asset's batch, in time order.

    ``ts`` epoch seconds of the grid points; ``values`` ``(rows, sensors)`` float64, NaN =
    unknown; ``offsets`` the smallest Kafka offset among the readings each row's values come
    from; ``trigger`` the position in the batch of the reading that decided each row;
    ``rejected`` (position, error) of readings refused.
    """

    ts: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    trigger: np.ndarray
    rejected: list[tuple[int, InvalidMessage]]


@dataclass(slots=True)
class _AssetGrid:
    n_sensors: int
    partition: int = -1
    next_g: int | None = None  # the next grid time to emit (ns)
    last_ns: int | None = None  # the newest reading (ns)
    nan_run: bool = False  # the last row emitted had no value at all
    # The readings a future grid row may still need (int64 ns, float64 values, offsets).
    times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(init=False)
    offsets: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.values = np.empty((0, self.n_sensors))

    def needed_offset(self) -> int | None:
        return int(self.offsets.min()) if len(self.offsets) else None


class StreamResampler:
    """Per-asset resampling state for one :class:`ResampleSpec` and sensor list."""

    def __init__(self, spec: ResampleSpec, n_sensors: int, *, max_assets: int = 10_000) -> None:
        if n_sensors < 1:
            raise ValueError("n_sensors must be positive")
        self.spec = spec
        self.n_sensors = n_sensors
        self.max_assets = max_assets
        self._period = spec.period_ns()
        self._limit = spec.limit_ns()
        self._assets: dict[str, _AssetGrid] = {}

    def __len__(self) -> int:
        return len(self._assets)

    def _empty(self, rejected: list[tuple[int, InvalidMessage]]) -> GridRows:
        return GridRows(np.empty(0), np.empty((0, self.n_sensors)), _NO_ROWS, _NO_ROWS, rejected)

    def extend(
        self, asset: str, partition: int, ts: np.ndarray, values: np.ndarray, offsets: np.ndarray
    ) -> GridRows:
        """Add one asset's readings in arrival order (``ts`` epoch seconds, ``values`` float64
        with NaN = no reading of that sensor); returns the grid rows they decide."""
        n = len(ts)
        if n == 0:
            return self._empty([])
        state = self._assets.get(asset)
        if state is None:
            if len(self._assets) >= self.max_assets:
                error = InvalidMessage("bad_asset", f"more than {self.max_assets} assets; raise max_assets")
                return self._empty([(i, error) for i in range(n)])
            state = _AssetGrid(self.n_sensors)
            self._assets[asset] = state
        state.partition = partition

        ts = np.asarray(ts, dtype=np.float64)
        placeable = np.abs(ts) < _TS_LIMIT_SECONDS  # also False for NaN
        ns = np.round(np.where(placeable, ts, 0.0) * 1e6).astype(np.int64) * 1000
        # The newest time before each reading; a refused reading is not newer, so it changes nothing.
        before = np.empty(n, dtype=np.int64)
        before[0] = _NONE if state.last_ns is None else state.last_ns
        if n > 1:
            newest = np.maximum.accumulate(np.where(placeable, ns, _NONE)[:-1])
            np.maximum(newest, before[0], out=before[1:])
        refused = ~placeable | (ns <= before)
        rejected: list[tuple[int, InvalidMessage]] = []
        if refused.any():
            rejected = [
                (int(i), _refusal(asset, ts[i], int(ns[i]), int(before[i]), bool(placeable[i])))
                for i in np.flatnonzero(refused)
            ]
            accepted = np.flatnonzero(~refused)
            if len(accepted) == 0:
                return self._empty(rejected)
        else:
            accepted = np.arange(n)
        times = ns[accepted]
        if state.next_g is None:
            state.next_g = -(-int(times[0]) // self._period) * self._period
        state.last_ns = int(times[-1])

        carried = len(state.times)
        all_times = np.concatenate([state.times, times])
        all_values = np.concatenate([state.values, np.asarray(values, dtype=np.float64)[accepted]])
        all_offsets = np.concatenate([state.offsets, np.asarray(offsets, dtype=np.int64)[accepted]])
        valid = ~np.isnan(all_values)

        decided = self._decided(all_times, valid, carried)
        last_g = (int(decided[-1]) // self._period) * self._period
        rows = self._empty(rejected)
        if last_g >= state.next_g:
            grid = self._grid(all_times, valid, state.next_g, last_g)
            cells = resample_cells(all_times, all_values, grid, self.spec.method, self._limit)
            known = cells.left >= 0
            trigger = np.searchsorted(decided, grid, side="left")
            source = np.where(
                known,
                np.minimum(all_offsets[np.maximum(cells.left, 0)], all_offsets[np.maximum(cells.right, 0)]),
                _MAX,
            )
            empty = ~known.any(axis=1)
            row_offsets = np.where(empty, all_offsets[carried + trigger], source.min(axis=1))
            # A run of rows without any value becomes its first row.
            keep = ~(empty & np.concatenate([[state.nan_run], empty[:-1]]))
            state.nan_run = bool(empty[-1])
            rows = GridRows(
                grid[keep] / 1e9, cells.values[keep], row_offsets[keep], accepted[trigger[keep]], rejected
            )
            state.next_g = last_g + self._period
        self._keep_needed(state, all_times, all_values, all_offsets, valid)
        return rows

    def _decided(self, times: np.ndarray, valid: np.ndarray, carried: int) -> np.ndarray:
        """For each new reading, the time up to which every grid point is decided once it has
        arrived (nondecreasing; see the module docstring)."""
        newest = times[carried:]
        if self.spec.method == "hold":
            return newest
        last_valid = np.maximum.accumulate(np.where(valid, times[:, None], _NONE), axis=0)[carried:]
        none = last_valid == _NONE
        age = newest[:, None] - np.where(none, newest[:, None], last_valid)
        per_sensor = np.where(none | (age >= self._limit), newest[:, None], last_valid)
        return per_sensor.min(axis=1)

    def _grid(self, times: np.ndarray, valid: np.ndarray, first: int, last: int) -> np.ndarray:
        """The grid points in ``[first, last]`` that may have a value (within ``limit`` after a
        reading with one), plus the first point of each stretch between them (all NaN there):
        a long silence costs one row, not one per period."""
        p = self._period
        with_value = times[valid.any(axis=1)]
        if len(with_value) == 0:
            return np.array([first], dtype=np.int64)
        breaks = np.flatnonzero(np.diff(with_value) > self._limit)
        if not len(breaks) and with_value[0] <= first and last - with_value[-1] <= self._limit:
            return np.arange(first, last + 1, p, dtype=np.int64)  # the common case: no silence
        starts = with_value[np.concatenate([[0], breaks + 1])]
        ends = with_value[np.concatenate([breaks, [len(with_value) - 1]])]
        lo = -(-np.maximum(starts, first) // p) * p
        hi = (np.minimum(ends + self._limit, last) // p) * p
        counts = np.maximum((hi - lo) // p + 1, 0)
        runs = counts > 0
        lo, hi, counts = lo[runs], hi[runs], counts[runs]
        total = int(counts.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        live = np.repeat(lo, counts) + within * p
        gaps: list[int] = []
        if len(lo) == 0 or lo[0] > first:
            gaps.append(first)
        after = hi + p
        following = np.append(lo[1:], _MAX)
        gaps.extend(after[(after <= last) & (following > after)].tolist())
        return np.sort(np.concatenate([live, np.array(gaps, dtype=np.int64)]))

    def _keep_needed(
        self, state: _AssetGrid, times: np.ndarray, values: np.ndarray, offsets: np.ndarray, valid: np.ndarray
    ) -> None:
        """Keep each sensor's last valid reading at or before the next grid point (if still
        within the limit) and every reading with a value after it: nothing else can reach a
        future grid row."""
        assert state.next_g is not None
        nxt = state.next_g
        keep = (times >= nxt) & valid.any(axis=1)
        upto = int(np.searchsorted(times, nxt, side="right"))
        if upto:
            rows = np.arange(upto)[:, None]
            last_rows = np.where(valid[:upto], rows, -1).max(axis=0)
            last_rows = last_rows[last_rows >= 0]
            keep[last_rows[nxt - times[last_rows] <= self._limit]] = True
        state.times, state.values, state.offsets = times[keep], values[keep], offsets[keep]

    def needed_offset(self, asset: str) -> int | None:
        """The oldest offset among the readings the asset's future grid rows may still need."""
        state = self._assets.get(asset)
        return None if state is None else state.needed_offset()

    def last_reading(self) -> dict[str, tuple[int, float]]:
        """Per asset: its partition and the time (epoch s) of its newest reading."""
        return {a: (s.partition, s.last_ns / 1e9) for a, s in self._assets.items() if s.last_ns is not None}

    def assets_in(self, partitions: set[int]) -> list[str]:
        return [a for a, s in self._assets.items() if s.partition in partitions]

    def drop_partitions(self, partitions: set[int]) -> None:
        self._assets = {a: s for a, s in self._assets.items() if s.partition not in partitions}


def _refusal(asset: str, ts: float, ns: int, before: int, placeable: bool) -> InvalidMessage:
    if not placeable:
        return InvalidMessage(
            "bad_timestamp", f"{ts!r} is outside the years 1824-2116 a resampled model can place"
        )
    if ns == before:
        return InvalidMessage(
            "time_backwards",
            f"asset {asset!r} sent a second reading for the same time; a resampled model keeps the "
            "first, as offline scoring does",
        )
    return InvalidMessage(
        "time_backwards", f"asset {asset!r} went back {(before - ns) / 1e9:.6f}s in time (resampled model)"
    )


class ResampledBuffers:
    """A :class:`StreamResampler` in front of :class:`WindowBuffers`, with the interface the
    processor uses. Windows are cut from grid rows exactly as offline after resampling: no gap
    limit (the grid is regular) and no forward fill (resampling already decided what to hold),
    so only a NaN grid row splits a series."""

    def __init__(self, spec: ResampleSpec, window: int, n_sensors: int, *, max_assets: int = 10_000) -> None:
        self.spec = spec
        self.resampler = StreamResampler(spec, n_sensors, max_assets=max_assets)
        self.windows = WindowBuffers(
            window, n_sensors, max_gap_seconds=None, max_fill_rows=0, max_assets=max_assets
        )

    def __len__(self) -> int:
        return len(self.resampler)

    def extend(
        self, asset: str, partition: int, ts: np.ndarray, values: np.ndarray, offsets: np.ndarray
    ) -> Extended:
        """Like :meth:`WindowBuffers.extend`, but ``ends`` are the positions of the readings that
        completed each window (one reading may complete several) and ``ts`` the grid times the
        windows end at."""
        rows = self.resampler.extend(asset, partition, ts, values, offsets)
        made = self.windows.extend(asset, partition, rows.ts, rows.values, rows.offsets)
        return Extended(
            rows.trigger[made.ends], made.windows, rows.rejected, rows.ts[made.ends], starts=made.starts
        )

    def assets_in(self, partitions: set[int]) -> list[str]:
        return self.resampler.assets_in(partitions)

    def drop_partitions(self, partitions: set[int]) -> None:
        self.resampler.drop_partitions(partitions)
        self.windows.drop_partitions(partitions)

    def rebuild_offsets(self, stale_after_seconds: float | None = None) -> dict[int, int]:
        """Per partition, the smallest offset needed to rebuild every asset's windows *and* its
        pending resampling state. Assets whose newest reading is older than their partition's
        newest by more than ``stale_after_seconds`` are left out (see WindowBuffers)."""
        last = self.resampler.last_reading()
        newest: dict[int, float] = {}
        for partition, ts in last.values():
            newest[partition] = max(newest.get(partition, ts), ts)
        result: dict[int, int] = {}
        for asset, (partition, ts) in last.items():
            if stale_after_seconds is not None and newest[partition] - ts > stale_after_seconds:
                continue
            needed = [
                o
                for o in (self.resampler.needed_offset(asset), self.windows.oldest_needed_offset(asset))
                if o is not None
            ]
            if needed:
                result[partition] = min(result.get(partition, min(needed)), *needed)
        return result
