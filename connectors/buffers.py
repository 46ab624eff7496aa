"""Per-asset sliding windows built from live readings, in the bundle's sensor order.

Why a buffer per asset: one topic carries many assets interleaved, and a window must only hold
consecutive rows of one asset. The rules mirror offline scoring so live and offline scores of
the same rows agree: a time gap larger than ``max_gap_seconds`` starts a new series (a window
never spans it); a missing value is forward-filled for at most ``max_fill_rows`` consecutive
rows, after which the series restarts; the window ending at a row scores that row.

Each row remembers the Kafka offset it came from so the consumer can store, with its commit,
the oldest offset still needed to rebuild every buffer after a restart or rebalance
(:meth:`WindowBuffers.rebuild_offsets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from connectors.messages import InvalidMessage, Reading


@dataclass(slots=True)
class _AssetState:
    window: int
    n_sensors: int
    partition: int = -1
    # Rows are stored twice (at i and i + window) so the last `window` rows are always one
    # contiguous slice: no copy until the window is handed to the engine.
    rows: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)
    head: int = 0  # index of the next write in [0, window)
    count: int = 0  # rows currently in the series (capped at window)
    last_ts: float | None = None
    last_values: np.ndarray = field(init=False)
    nan_run: np.ndarray = field(init=False)
    in_dropout: bool = False

    def __post_init__(self) -> None:
        self.rows = np.zeros((2 * self.window, self.n_sensors), dtype=np.float32)
        self.offsets = np.full(2 * self.window, -1, dtype=np.int64)
        self.last_values = np.full(self.n_sensors, np.nan)
        self.nan_run = np.zeros(self.n_sensors, dtype=np.int64)

    def reset(self) -> None:
        self.count = 0

    def append(self, row: np.ndarray, offset: int) -> None:
        w = self.window
        self.rows[self.head] = row
        self.rows[self.head + w] = row
        self.offsets[self.head] = offset
        self.offsets[self.head + w] = offset
        self.head = (self.head + 1) % w
        self.count = min(self.count + 1, w)

    def window_view(self) -> np.ndarray:
        return self.rows[self.head : self.head + self.window]

    def oldest_needed_offset(self) -> int | None:
        """Offset of the oldest row a future window still needs (the last window-1 rows)."""
        keep = min(self.count, self.window - 1)
        if keep == 0:
            return None
        start = self.head + self.window - keep
        return int(self.offsets[start : start + keep].min())


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
        """Add one reading; returns a view of the full window ending at it, else None.

        The view is only valid until the next push for the same asset: copy it (the batcher
        does) before pushing more. Raises :class:`InvalidMessage` (``time_backwards``) for a
        reading older than the asset's last one by more than the tolerance (it is not added),
        and ``bad_asset`` for a new asset beyond ``max_assets``.
        """
        state = self._assets.get(reading.asset)
        if state is None:
            if len(self._assets) >= self.max_assets:
                # A producer bug (e.g. a timestamp as key) must not exhaust memory or explode
                # the asset label of the metrics.
                raise InvalidMessage("bad_asset", f"more than {self.max_assets} assets; raise max_assets")
            state = _AssetState(self.window, self.n_sensors)
            self._assets[reading.asset] = state
        state.partition = partition
        if state.last_ts is not None:
            back = state.last_ts - reading.ts
            if back > self.backwards_tolerance_seconds:
                raise InvalidMessage(
                    "time_backwards",
                    f"asset {reading.asset!r} went back {back:.3f}s in time",
                )
            if self.max_gap_seconds is not None and -back > self.max_gap_seconds:
                state.reset()
        state.last_ts = max(reading.ts, state.last_ts) if state.last_ts is not None else reading.ts

        row = reading.values
        missing = np.isnan(row)
        if not missing.any():  # the common case: no dropout, nothing to fill
            if state.in_dropout:
                state.nan_run[:] = 0
                state.in_dropout = False
            state.last_values = row
            state.append(row, offset)
            return state.window_view() if state.count >= self.window else None
        state.in_dropout = True
        state.nan_run = np.where(missing, state.nan_run + 1, 0)
        if missing.any():
            known = ~np.isnan(state.last_values)
            fillable = missing & (state.nan_run <= self.max_fill_rows) & known
            if not np.array_equal(fillable, missing):
                # Not fillable: the series breaks here and restarts at the next complete row.
                state.reset()
                state.last_values = np.where(missing, state.last_values, row)
                return None
            row = np.where(missing, state.last_values, row)
        state.last_values = row
        state.append(row, offset)
        if state.count < self.window:
            return None
        return state.window_view()

    def assets_in(self, partitions: set[int]) -> list[str]:
        return [a for a, s in self._assets.items() if s.partition in partitions]

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget assets of partitions this consumer no longer owns (their state is rebuilt
        by whoever owns them next)."""
        self._assets = {a: s for a, s in self._assets.items() if s.partition not in partitions}

    def rebuild_offsets(self, stale_after_seconds: float | None = None) -> dict[int, int]:
        """Per partition, the smallest offset needed to rebuild every buffer in it.

        Assets silent for longer than ``stale_after_seconds`` (relative to the newest reading
        of their partition) are left out: their next reading restarts the series anyway, and
        an idle asset must not pin the rewind point forever.
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
            oldest = s.oldest_needed_offset()
            if oldest is not None:
                result[s.partition] = min(result.get(s.partition, oldest), oldest)
        return result
