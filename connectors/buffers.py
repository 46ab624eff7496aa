"""Per-asset sliding windows built from live readings, in the bundle's sensor order.

Why a buffer per asset: one topic carries many assets interleaved, and a window must only hold
consecutive rows of one asset. The rules mirror offline scoring so live and offline scores of
the same rows agree: a time gap larger than ``max_gap_seconds`` starts a new series (a window
never spans it); a missing value is forward-filled for at most ``max_fill_rows`` consecutive
rows, after which the series restarts; the window ending at a row scores that row.

Each row remembers the Kafka offsets it depends on so the consumer can store, with its commit,
the oldest offset still needed to rebuild every buffer after a restart or rebalance
(:meth:`WindowBuffers.rebuild_offsets`). A forward-filled value depends on the earlier row it
was filled from, not only on its own row: each buffered row therefore keeps the oldest offset
among its own and those of its fill sources, and each sensor keeps the offset of the row its
last value came from while a later row may still be filled from it. Replaying from the
smallest of these into empty buffers gives the same rows, fills and series breaks from the
first buffered row on (what a future window or fill reads), so a restart changes no score.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from memae_ts.connectors.messages import InvalidMessage, Reading
from numpy.lib.stride_tricks import sliding_window_view

_NO_ENDS = np.empty(0, dtype=np.int64)
_NO_STARTS = np.empty(0, dtype=bool)


# Up to this many rows of one asset in one call take the small-batch path when they can.
_SMALL = 8
# Read-only (shared by every call): the window ends 0..n-1 of n rows that each end a window.
_ENDS = [np.arange(n, dtype=np.int64) for n in range(_SMALL + 1)]
for _ends in _ENDS:
    _ends.setflags(write=False)
_WINDOW_INDEX: dict[tuple[int, int], np.ndarray] = {}


def _window_index(n: int, window: int) -> np.ndarray:
    """Row positions of the n windows ending at the last n of ``window - 1 + n`` rows."""
    index = _WINDOW_INDEX.get((n, window))
    if index is None:
        index = _WINDOW_INDEX[n, window] = np.arange(n)[:, None] + np.arange(window)
        index.setflags(write=False)
    return index


def _starts(n: int, first: bool) -> np.ndarray:
    """Stretch-start flags of n windows of one series, the first one ``first``."""
    out = np.zeros(n, dtype=bool)
    if n and first:
        out[0] = True
    return out


@dataclass(slots=True)
class _AssetState:
    window: int
    n_sensors: int
    partition: int = -1
    # The last rows of the current series (at most window - 1): what the next window needs
    # besides the rows still to come, and per row the oldest Kafka offset it depends on (its
    # own, or that of a row one of its values was forward-filled from).
    tail: np.ndarray = field(init=False)
    tail_offsets: np.ndarray = field(init=False)
    last_ts: float | None = None
    last_values: np.ndarray = field(init=False)
    # Per sensor: the offset of the row its last value came from (-1: none yet).
    value_offsets: np.ndarray = field(init=False)
    nan_run: np.ndarray = field(init=False)
    in_dropout: bool = False
    # True until the first window of the current series is made: that window starts a stretch,
    # which the alarm rule (memae_ts.detection.alarms) treats as a gap. ``first_is_start`` tells whether
    # the windows of the last ``extend`` call began with such a window.
    fresh: bool = True
    first_is_start: bool = False

    def __post_init__(self) -> None:
        self.reset()
        self.last_values = np.full(self.n_sensors, np.nan)
        self.value_offsets = np.full(self.n_sensors, -1, dtype=np.int64)
        self.nan_run = np.zeros(self.n_sensors, dtype=np.int64)

    def reset(self) -> None:
        self.tail = np.empty((0, self.n_sensors), dtype=np.float32)
        self.tail_offsets = np.empty(0, dtype=np.int64)
        self.fresh = True

    def extend(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Append rows of one series; returns the windows ending at each of them that has a
        full window behind it (those are the last ``len(result)`` rows)."""
        w = self.window
        full = np.concatenate([self.tail, rows.astype(np.float32, copy=False)])
        full_offsets = np.concatenate([self.tail_offsets, offsets])
        n = len(rows)
        if 0 < n <= _SMALL and len(self.tail) == w - 1:
            # A few rows on a full buffer (a slow asset's poll, a forward-filled row): each ends
            # a window. The windows are taken by one cached fancy index (a copy, the same values
            # as the view below, without sliding_window_view's per-call cost); the new tail is
            # a view of at most window - 1 + _SMALL rows, which keeps nothing big alive.
            self.tail = full[n:]
            self.tail_offsets = full_offsets[n:]
            self.first_is_start, self.fresh = self.fresh, False
            return full[_window_index(n, w)]
        start = max(0, len(full) - (w - 1))
        self.tail = full[start:].copy()  # not a view: it would keep the whole batch alive
        self.tail_offsets = full_offsets[start:].copy()
        if len(full) < w:
            self.first_is_start = False
            return np.empty((0, w, self.n_sensors), dtype=np.float32)
        self.first_is_start, self.fresh = self.fresh, False
        return sliding_window_view(full, w, axis=0).transpose(0, 2, 1)

    def oldest_needed_offset(self, max_fill_rows: int = 0) -> int | None:
        """The oldest offset a future window or fill still needs: the buffered rows (the last
        window-1) with their fill sources, and the rows each sensor's last value came from
        while a next missing value could still be filled from it."""
        needed = int(self.tail_offsets.min()) if len(self.tail_offsets) else None
        if max_fill_rows > 0:
            live = (self.value_offsets >= 0) & (self.nan_run < max_fill_rows)
            if live.any():
                source = int(self.value_offsets[live].min())
                needed = source if needed is None else min(needed, source)
        return needed


@dataclass(slots=True)
class Extended:
    """What :meth:`WindowBuffers.extend` made of one asset's rows: the windows ending at rows
    ``ends`` (positions in the rows given, ascending) and the rows refused, with why. ``ts`` is
    the time each window ends at when that is not the time of the row at ``ends`` (resampled
    models, ``connectors/resampling.py``)."""

    ends: np.ndarray
    windows: np.ndarray
    rejected: list[tuple[int, InvalidMessage]]
    ts: np.ndarray | None = None
    starts: np.ndarray | None = None  # per window: True where it is the first of a stretch


class WindowBuffers:
    """All assets' buffers for one bundle (window length and sensor list)."""

    def __init__(
        self,
        window: int,
        n_sensors: int,
        *,
        max_gap_seconds: float | None = None,
        max_fill_rows: int = 0,
        backwards_tolerance_seconds: float = 0.0,
        max_assets: int = 10_000,
    ) -> None:
        if window < 1 or n_sensors < 1:
            raise ValueError("window and n_sensors must be positive")
        self.window = window
        self.n_sensors = n_sensors
        self.max_gap_seconds = max_gap_seconds
        self.max_fill_rows = max_fill_rows
        self.backwards_tolerance_seconds = backwards_tolerance_seconds
        self.max_assets = max_assets
        self._assets: dict[str, _AssetState] = {}

    def __len__(self) -> int:
        return len(self._assets)

    def push(self, reading: Reading, partition: int, offset: int) -> np.ndarray | None:
        """Add one reading; returns the full window ending at it, else None.

        Raises :class:`InvalidMessage` (``time_backwards``) for a reading older than the
        asset's last one by more than the tolerance (it is not added), and ``bad_asset`` for a
        new asset beyond ``max_assets``.
        """
        result = self.extend(
            reading.asset,
            partition,
            np.array([reading.ts]),
            reading.values.reshape(1, -1),
            np.array([offset], dtype=np.int64),
        )
        if result.rejected:
            raise result.rejected[0][1]
        return result.windows[0] if len(result.ends) else None

    def extend(
        self, asset: str, partition: int, ts: np.ndarray, values: np.ndarray, offsets: np.ndarray
    ) -> Extended:
        """Add rows of one asset in arrival order (``values`` float64, NaN = missing).

        Why one call per asset and batch: the rules (time order, gaps, forward fill) become a
        few array operations on all rows instead of Python work per row.
        """
        n = len(ts)
        if n == 0:
            return Extended(_NO_ENDS, self._no_windows(), [])
        state = self._assets.get(asset)
        if state is None:
            if len(self._assets) >= self.max_assets:
                # A producer bug (e.g. a timestamp as key) must not exhaust memory or explode
                # the asset label of the metrics.
                error = InvalidMessage("bad_asset", f"more than {self.max_assets} assets; raise max_assets")
                return Extended(_NO_ENDS, self._no_windows(), [(i, error) for i in range(n)])
            state = _AssetState(self.window, self.n_sensors)
            self._assets[asset] = state
        state.partition = partition
        if n <= _SMALL:
            fast = self._small_clean(state, ts, values, offsets)
            if fast is not None:
                return fast

        # Newest accepted time before each row. A refused row is older than that by more than
        # the tolerance, so counting it in the running maximum changes nothing.
        before = np.empty(n)
        before[0] = -np.inf if state.last_ts is None else state.last_ts
        if n > 1:
            np.maximum(np.maximum.accumulate(ts[:-1]), before[0], out=before[1:])
        back = before - ts
        refused = back > self.backwards_tolerance_seconds
        rejected = [
            (int(i), InvalidMessage("time_backwards", f"asset {asset!r} went back {back[i]:.3f}s in time"))
            for i in np.flatnonzero(refused)
        ]
        if self.max_gap_seconds is not None:
            restart = -back > self.max_gap_seconds
        else:
            restart = np.zeros(n, dtype=bool)
        accepted = np.flatnonzero(~refused)
        if len(accepted) == 0:
            return Extended(_NO_ENDS, self._no_windows(), rejected)
        state.last_ts = float(max(before[0], ts[accepted].max()))

        rows = values[accepted]
        missing = np.isnan(rows).any(axis=1)
        if self.max_fill_rows == 0:
            # Nothing is ever filled: a row with a missing value only ends the series, so the
            # rows between such rows go in as runs, like clean rows (resampled models).
            ends, windows, starts = self._clean(state, rows, offsets[accepted], restart[accepted], missing)
        elif state.in_dropout or missing.any():
            ends, windows, starts = self._filled(state, rows, offsets[accepted], restart[accepted])
        else:
            ends, windows, starts = self._clean(state, rows, offsets[accepted], restart[accepted])
        return Extended(accepted[ends], windows, rejected, starts=starts)

    def _small_clean(
        self, state: _AssetState, ts: np.ndarray, values: np.ndarray, offsets: np.ndarray
    ) -> Extended | None:
        """The steady state of a slow asset, a few rows per poll, without numpy's per-call cost
        on tiny arrays (that was ~70 us per call for 4 rows, most of the daemon's CPU per reading
        with many assets at live rates): every row accepted, none missing, no time gap, no
        dropout, and a full window's worth of rows buffered, so each row ends a window. Returns
        None, having changed nothing, when any of that does not hold (the general path then
        decides, with the same result as before)."""
        w = self.window
        newest = state.last_ts
        if state.in_dropout or newest is None or len(state.tail) != w - 1:
            return None
        tolerance, gap = self.backwards_tolerance_seconds, self.max_gap_seconds
        for t in ts.tolist():  # Python floats are float64: the same tests as the array path
            back = newest - t
            if t != t or back > tolerance or (gap is not None and -back > gap):
                return None  # a refused row, a new series or a NaN time
            if t > newest:
                newest = t
        if np.isnan(values).any():
            return None
        n = len(ts)
        windows = state.extend(values, offsets)  # n windows: the buffer is full
        state.last_ts = float(newest)
        state.last_values = values[-1].copy()
        state.value_offsets[:] = offsets[-1]
        return Extended(_ENDS[n], windows, [], starts=_starts(n, state.first_is_start))

    def _clean(
        self,
        state: _AssetState,
        rows: np.ndarray,
        offsets: np.ndarray,
        restart: np.ndarray,
        missing: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows without missing values: only time gaps split them into series. With ``missing``
        (a row with a value missing when nothing is filled, or one the fill rules cannot use),
        each row it marks is left out and ends the series."""
        if missing is None:
            missing = np.zeros(len(rows), dtype=bool)
        cuts = restart | missing | np.concatenate([[False], missing[:-1]])
        bounds = [0, *np.flatnonzero(cuts).tolist(), len(rows)]
        ends: list[np.ndarray] = []
        windows: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        for start, stop in itertools.pairwise(bounds):
            if start == stop:
                continue
            if restart[start] or missing[start]:
                state.reset()
            if missing[start]:  # a run of its own, one row long
                continue
            made = state.extend(rows[start:stop], offsets[start:stop])
            ends.append(np.arange(stop - len(made), stop))
            windows.append(made)
            starts.append(_starts(len(made), state.first_is_start))
        state.last_values = rows[-1].copy()
        state.value_offsets[:] = offsets[-1]
        return self._join(ends, windows, starts)

    def _filled(
        self, state: _AssetState, rows: np.ndarray, offsets: np.ndarray, restart: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The forward-fill rules, for rows of which some miss values: a sensor missing for at
        most ``max_fill_rows`` consecutive rows takes its last value; otherwise the series breaks
        there (that row is left out) and restarts at the next row that can be used.

        Why in arrays: row by row this cost ~25 us a row, and one missing value in a poll sent
        every row of it that way. Every decision depends only on what each sensor last showed,
        never on which rows were used, so it is computed for all rows at once: per sensor the
        last row that observed it (``seen``), the length of its missing run, whether a value
        exists to fill from. The usable rows then go in as :meth:`_clean` takes runs of
        complete rows. tests/test_edge_buffers.py checks it against the rules applied one row
        at a time."""
        n, n_sensors = rows.shape
        observed = ~np.isnan(rows)
        index = np.arange(n)[:, None]
        seen = np.where(observed, index, -1)
        np.maximum.accumulate(seen, axis=0, out=seen)
        never = seen < 0  # not observed in these rows up to here: the state's value, if any
        # Consecutive rows each sensor has been missing (0 where observed), continuing the
        # state's run (only ever non-zero inside a dropout).
        nan_run = np.where(never, state.nan_run + index + 1, index - seen)
        known = ~never | ~np.isnan(state.last_values)
        usable = (observed | ((nan_run <= self.max_fill_rows) & known)).all(axis=1)
        source = np.maximum(seen, 0)
        columns = np.arange(n_sensors)
        filled = np.where(never, state.last_values, rows[source, columns])
        # A row depends on the rows its values came from: itself where observed, else the
        # earlier rows its filled values were last seen in.
        source_offsets = np.where(never, state.value_offsets, offsets[source])
        depends_on = source_offsets.min(axis=1)
        made = self._clean(state, filled, depends_on, restart, ~usable)
        state.last_values = filled[-1].copy()
        state.value_offsets = source_offsets[-1].copy()
        state.nan_run = nan_run[-1].copy()
        state.in_dropout = not observed[-1].all()
        return made

    def _join(
        self, ends: list[np.ndarray], windows: list[np.ndarray], starts: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not ends:
            return _NO_ENDS, self._no_windows(), _NO_STARTS
        if len(ends) == 1:
            return ends[0], windows[0], starts[0]
        return np.concatenate(ends), np.concatenate(windows), np.concatenate(starts)

    def _no_windows(self) -> np.ndarray:
        return np.empty((0, self.window, self.n_sensors), dtype=np.float32)

    def assets_in(self, partitions: set[int]) -> list[str]:
        return [a for a, s in self._assets.items() if s.partition in partitions]

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget assets of partitions this consumer no longer owns (their state is rebuilt
        by whoever owns them next)."""
        self._assets = {a: s for a, s in self._assets.items() if s.partition not in partitions}

    def oldest_needed_offset(self, asset: str) -> int | None:
        """The oldest offset a future window or fill of ``asset`` still needs (None: none)."""
        state = self._assets.get(asset)
        return None if state is None else state.oldest_needed_offset(self.max_fill_rows)

    def rebuild_offsets(self, stale_after_seconds: float | None = None) -> dict[int, int]:
        """Per partition, the smallest offset needed to rebuild every buffer in it.

        Assets silent for longer than ``stale_after_seconds`` (relative to the newest reading
        of their partition) are left out: their next reading restarts the series anyway, and
        an idle asset must not pin the rewind point forever. (A value missing in the first
        rows after such a silence is forward-filled from before it, as offline; after a restart
        during the silence it is not, and the asset's first window comes that many rows later.)
        """
        newest: dict[int, float] = {}
        for s in self._assets.values():
            if s.last_ts is not None:
                newest[s.partition] = max(newest.get(s.partition, s.last_ts), s.last_ts)
        result: dict[int, int] = {}
        for s in self._assets.values():
            if (
                stale_after_seconds is not None
                and s.last_ts is not None
                and newest[s.partition] - s.last_ts > stale_after_seconds
            ):
                continue
            oldest = s.oldest_needed_offset(self.max_fill_rows)
            if oldest is not None:
                result[s.partition] = min(result.get(s.partition, oldest), oldest)
        return result
