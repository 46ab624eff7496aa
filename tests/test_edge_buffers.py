"""Live window buffers: same windows as offline scoring, and exact rebuild points for commits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from memae_ts.connectors.buffers import WindowBuffers
from memae_ts.connectors.messages import InvalidMessage, Reading

from memae_ts.io.data import load_csv
from memae_ts.io.windows import gather, segment, window_ends


def reading(asset: str, ts: float, *values: float) -> Reading:
    return Reading(asset, ts, np.array(values, dtype=np.float64))


def test_first_window_after_window_rows_then_one_per_row_in_time_order():
    buf = WindowBuffers(3, 2)
    out = [buf.push(reading("a", t, t, -t), 0, int(t)) for t in range(5)]
    assert out[0] is None and out[1] is None
    np.testing.assert_array_equal(out[4], [[2, -2], [3, -3], [4, -4]])


def test_assets_do_not_mix():
    buf = WindowBuffers(2, 1)
    assert buf.push(reading("a", 0, 1), 0, 0) is None
    assert buf.push(reading("b", 0, 100), 0, 1) is None
    np.testing.assert_array_equal(buf.push(reading("a", 60, 2), 0, 2), [[1], [2]])
    np.testing.assert_array_equal(buf.push(reading("b", 60, 200), 0, 3), [[100], [200]])


def test_a_time_gap_restarts_the_series():
    buf = WindowBuffers(2, 1, max_gap_seconds=120)
    buf.push(reading("a", 0, 1), 0, 0)
    assert buf.push(reading("a", 181, 2), 0, 1) is None
    np.testing.assert_array_equal(buf.push(reading("a", 241, 3), 0, 2), [[2], [3]])


def test_short_dropouts_are_forward_filled_long_ones_break_the_series():
    buf = WindowBuffers(2, 2, max_fill_rows=2)
    nan = float("nan")
    buf.push(reading("a", 0, 1, 10), 0, 0)
    np.testing.assert_array_equal(buf.push(reading("a", 1, nan, 11), 0, 1), [[1, 10], [1, 11]])
    np.testing.assert_array_equal(buf.push(reading("a", 2, nan, 12), 0, 2), [[1, 11], [1, 12]])
    assert buf.push(reading("a", 3, nan, 13), 0, 3) is None  # third missing row: not filled
    assert buf.push(reading("a", 4, 5, 14), 0, 4) is None  # series restarts here
    np.testing.assert_array_equal(buf.push(reading("a", 5, 6, 15), 0, 5), [[5, 14], [6, 15]])


def test_a_missing_first_value_cannot_be_filled():
    buf = WindowBuffers(1, 1, max_fill_rows=3)
    assert buf.push(reading("a", 0, float("nan")), 0, 0) is None
    np.testing.assert_array_equal(buf.push(reading("a", 1, 1), 0, 1), [[1]])


def test_going_back_in_time_is_rejected_beyond_the_tolerance_and_not_added():
    buf = WindowBuffers(2, 1, backwards_tolerance_seconds=5)
    buf.push(reading("a", 100, 1), 0, 0)
    with pytest.raises(InvalidMessage) as err:
        buf.push(reading("a", 94, 2), 0, 1)
    assert err.value.reason == "time_backwards"
    np.testing.assert_array_equal(buf.push(reading("a", 97, 3), 0, 2), [[1], [3]])


def test_rebuild_offsets_point_at_the_oldest_row_a_future_window_needs():
    buf = WindowBuffers(3, 1)
    # partition 0 carries a and b interleaved, partition 1 carries c
    for off, (asset, ts) in enumerate([("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("a", 3)]):
        buf.push(reading(asset, ts, 0), 0, off)
    buf.push(reading("c", 0, 0), 1, 40)
    # a needs its last 2 rows (offsets 4, 5); b needs offsets 1, 3 -> partition 0 from 1
    assert buf.rebuild_offsets() == {0: 1, 1: 40}


def test_idle_assets_do_not_pin_the_rebuild_point():
    buf = WindowBuffers(3, 1)
    buf.push(reading("idle", 0, 0), 0, 0)
    for off, ts in enumerate(range(1000, 1003), start=1):
        buf.push(reading("busy", ts, 0), 0, off)
    assert buf.rebuild_offsets() == {0: 0}
    assert buf.rebuild_offsets(stale_after_seconds=180) == {0: 2}


def test_dropping_partitions_forgets_their_assets():
    buf = WindowBuffers(2, 1)
    buf.push(reading("a", 0, 0), 0, 0)
    buf.push(reading("b", 0, 0), 1, 0)
    assert buf.assets_in({1}) == ["b"]
    buf.drop_partitions({1})
    assert len(buf) == 1 and buf.rebuild_offsets() == {0: 0}


def test_live_windows_equal_offline_windows(tmp_path):
    """Random gaps and dropouts: every window the buffers emit is the offline window of that row."""
    rng = np.random.default_rng(3)
    n, window, max_gap, max_fill = 400, 8, 150.0, 2
    steps = np.where(rng.random(n) < 0.03, 600, 60)
    times = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="s")
    values = rng.normal(size=(n, 3)).round(4)
    for start in rng.integers(0, n, 25):
        values[start : start + rng.integers(1, 5), rng.integers(0, 3)] = np.nan
    frame = pd.DataFrame(values, columns=["s1", "s2", "s3"])
    frame.insert(0, "timestamp", times.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(tmp_path / "d.csv", index=False)

    data = load_csv(str(tmp_path / "d.csv"))
    segments = segment(data, max_gap_seconds=max_gap, max_fill_rows=max_fill)
    ends = window_ends(segments, window)
    offline = dict(zip(ends.tolist(), gather(segments.values, ends, window), strict=True))

    buf = WindowBuffers(window, 3, max_gap_seconds=max_gap, max_fill_rows=max_fill)
    live = {}
    for i in range(n):
        w = buf.push(Reading("a", times[i].timestamp(), values[i]), 0, i)
        if w is not None:
            live[i] = w.copy()
    assert sorted(live) == sorted(offline)
    for i, w in live.items():
        np.testing.assert_array_equal(w, offline[i])


def test_assets_beyond_the_cap_are_rejected_not_buffered():
    buf = WindowBuffers(2, 1, max_assets=2)
    buf.push(reading("a", 0, 0), 0, 0)
    buf.push(reading("b", 0, 0), 0, 1)
    with pytest.raises(InvalidMessage) as err:
        buf.push(reading("c", 0, 0), 0, 2)
    assert err.value.reason == "bad_asset"
    assert len(buf) == 2
    buf.push(reading("a", 60, 0), 0, 3)  # known assets go on


def test_batches_make_the_same_windows_as_one_reading_at_a_time():
    """Random batch sizes over gaps, dropouts and late readings: batches and single readings
    agree on every window, every refusal and the rebuild point."""
    rng = np.random.default_rng(11)
    n, window = 600, 5
    ts = np.cumsum(np.where(rng.random(n) < 0.03, 900.0, 60.0))
    late = rng.random(n) < 0.02
    ts[late] -= 400.0  # beyond the 100 s tolerance: refused
    values = rng.normal(size=(n, 2))
    for start in rng.integers(0, n, 20):
        values[start : start + rng.integers(1, 6), rng.integers(0, 2)] = np.nan
    kwargs = dict(max_gap_seconds=300.0, max_fill_rows=2, backwards_tolerance_seconds=100.0)
    one, many = WindowBuffers(window, 2, **kwargs), WindowBuffers(window, 2, **kwargs)

    expected: dict[int, np.ndarray] = {}
    refused_one = []
    rebuild_after = [one.rebuild_offsets()]  # after the first i readings
    for i in range(n):
        try:
            w = one.push(Reading("a", ts[i], values[i]), 0, i)
            if w is not None:
                expected[i] = w.copy()
        except InvalidMessage as exc:
            refused_one.append((i, exc.reason))
        rebuild_after.append(one.rebuild_offsets())

    got: dict[int, np.ndarray] = {}
    refused_many = []
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 40)))
        offsets = np.arange(start, stop)
        made = many.extend("a", 0, ts[start:stop], values[start:stop], offsets)
        refused_many += [(start + i, exc.reason) for i, exc in made.rejected]
        for end, w in zip(made.ends, made.windows, strict=True):
            got[start + int(end)] = w
        assert many.rebuild_offsets() == rebuild_after[stop]
        start = stop

    assert refused_many == refused_one and refused_one
    assert sorted(got) == sorted(expected)
    for i, w in expected.items():
        np.testing.assert_array_equal(got[i], w)


def test_nothing_filled_batches_make_the_offline_windows(tmp_path):
    """max_fill_rows=0 (resampled models): a row with a missing value only splits the series,
    so batches go in as runs between such rows; every window is still the offline one."""
    rng = np.random.default_rng(5)
    n, window, max_gap = 500, 4, 150.0
    steps = np.where(rng.random(n) < 0.03, 600, 60)
    times = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="s")
    values = rng.normal(size=(n, 2)).round(4)
    values[rng.random((n, 2)) < 0.06] = np.nan
    frame = pd.DataFrame(values, columns=["s1", "s2"])
    frame.insert(0, "timestamp", times.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_csv(str(tmp_path / "d.csv"))
    for gap in (max_gap, None):
        segments = segment(data, max_gap_seconds=gap, max_fill_rows=0)
        ends = window_ends(segments, window)
        buf = WindowBuffers(window, 2, max_gap_seconds=gap, max_fill_rows=0)
        got: dict[int, np.ndarray] = {}
        start = 0
        while start < n:
            stop = min(n, start + int(rng.integers(1, 30)))
            ts = np.array([t.timestamp() for t in times[start:stop]])
            made = buf.extend("a", 0, ts, values[start:stop], np.arange(start, stop))
            for end, w in zip(made.ends, made.windows, strict=True):
                got[start + int(end)] = w
            start = stop
        assert sorted(got) == ends.tolist() and len(ends) > 100
        for end, w in zip(ends, gather(segments.values, ends, window), strict=True):
            np.testing.assert_array_equal(got[int(end)], w)


def test_a_filled_value_keeps_the_row_it_came_from_in_the_rebuild_point():
    """Issue #14: the first buffered row had a value forward-filled from an earlier row; a
    rebuild from the buffered rows alone could not fill it, and a score was lost."""
    nan = float("nan")
    buf = WindowBuffers(3, 2, max_fill_rows=2)
    buf.push(reading("a", 0, 1, 10), 0, 100)
    buf.push(reading("a", 60, 2, 11), 0, 101)
    buf.push(reading("a", 120, nan, 12), 0, 102)  # filled from offset 101
    buf.push(reading("a", 180, nan, 13), 0, 103)  # filled from offset 101
    # The tail is offsets 102 and 103; both were filled from 101.
    assert buf.rebuild_offsets() == {0: 101}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replaying_from_any_rebuild_point_makes_the_uninterrupted_windows(seed):
    """A restart after any reading: fresh buffers fed from the committed rebuild point (history)
    emit, from the restart on, exactly the windows the uninterrupted buffers emit."""
    rng = np.random.default_rng(seed)
    n, window, n_sensors = 240, 6, 3
    ts = np.cumsum(np.where(rng.random(n) < 0.04, 700.0, 60.0))
    values = rng.normal(size=(n, n_sensors))
    for start in rng.integers(0, n, 40):
        values[start : start + rng.integers(1, 5), rng.integers(0, n_sensors)] = np.nan
    assets = np.where(rng.random(n) < 0.7, "a", "b")
    kwargs = dict(max_gap_seconds=300.0, max_fill_rows=3)

    def run(buf: WindowBuffers, lo: int, hi: int) -> dict[int, np.ndarray]:
        out = {}
        for i in range(lo, hi):
            w = buf.push(Reading(str(assets[i]), ts[i], values[i]), 0, i)
            if w is not None:
                out[i] = w.copy()
        return out

    whole = WindowBuffers(window, n_sensors, **kwargs)
    expected: dict[int, np.ndarray] = {}
    rebuild_at: list[int] = []
    for i in range(n):
        rebuild_at.append(whole.rebuild_offsets().get(0, i))  # before reading i
        expected.update(run(whole, i, i + 1))
    for restart in sorted(rng.choice(np.arange(1, n), 40, replace=False)):
        fresh = WindowBuffers(window, n_sensors, **kwargs)
        run(fresh, rebuild_at[restart], restart)  # history: rebuilds, not scored
        got = run(fresh, restart, n)
        want = {i: w for i, w in expected.items() if i >= restart}
        assert sorted(got) == sorted(want), restart
        for i, w in want.items():
            np.testing.assert_array_equal(got[i], w)



class OneRowAtATime(WindowBuffers):
    """The forward-fill rules as they read, one row after the other (the daemon's code until
    the rules were computed in arrays): the reference for ``WindowBuffers._filled``."""

    def _filled(self, state, rows, offsets, restart):  # type: ignore[no-untyped-def]
        ends, windows, starts = [], [], []
        for i, row in enumerate(rows):
            if restart[i]:
                state.reset()
            missing = np.isnan(row)
            offset = int(offsets[i])
            depends_on = offsets[i : i + 1]
            if not missing.any():
                if state.in_dropout:
                    state.nan_run[:] = 0
                    state.in_dropout = False
                state.value_offsets[:] = offset
            else:
                state.in_dropout = True
                state.nan_run = np.where(missing, state.nan_run + 1, 0)
                known = ~np.isnan(state.last_values)
                fillable = missing & (state.nan_run <= self.max_fill_rows) & known
                if not np.array_equal(fillable, missing):
                    state.reset()
                    state.last_values = np.where(missing, state.last_values, row)
                    state.value_offsets[~missing] = offset
                    continue
                row = np.where(missing, state.last_values, row)
                state.value_offsets[~missing] = offset
                depends_on = np.array([min(offset, int(state.value_offsets[missing].min()))], dtype=np.int64)
            state.last_values = row
            made = state.extend(row.reshape(1, -1), depends_on)
            if len(made):
                ends.append(np.array([i]))
                windows.append(made)
                starts.append(np.array([state.first_is_start]))
        return self._join(ends, windows, starts)


@pytest.mark.parametrize(
    ("seed", "share", "max_fill_rows"), [(1, 0.02, 3), (2, 0.1, 2), (3, 0.3, 1), (4, 0.05, 5)]
)
def test_forward_fill_in_arrays_follows_the_rules_one_row_at_a_time(
    seed: int, share: float, max_fill_rows: int
) -> None:
    """Messy streams (scattered and long dropouts, a sensor that starts missing, time gaps,
    late rows) in random poll sizes: the windows, their stretch starts, refusals,
    rebuild points and the per-asset fill state are those of the rules applied row by row."""
    rng = np.random.default_rng(seed)
    n, window, n_sensors = 1500, 5, 4
    ts = np.cumsum(np.where(rng.random(n) < 0.02, 900.0, 60.0))
    ts[rng.random(n) < 0.01] -= 400.0  # beyond the tolerance: refused
    values = rng.normal(size=(n, n_sensors))
    values[rng.random((n, n_sensors)) < share] = np.nan
    for start in rng.integers(0, n, 15):  # dropouts longer than the fill allows
        values[start : start + rng.integers(1, 3 * max_fill_rows + 2), rng.integers(0, n_sensors)] = np.nan
    values[:30, 2] = np.nan  # nothing to fill from yet
    kwargs = dict(max_gap_seconds=300.0, max_fill_rows=max_fill_rows, backwards_tolerance_seconds=100.0)
    arrays, reference = WindowBuffers(window, n_sensors, **kwargs), OneRowAtATime(window, n_sensors, **kwargs)
    start = 0
    windows_made = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 60)))
        offsets = np.arange(start, stop)
        got = arrays.extend("a", 0, ts[start:stop], values[start:stop], offsets)
        want = reference.extend("a", 0, ts[start:stop], values[start:stop], offsets)
        np.testing.assert_array_equal(got.ends, want.ends)
        np.testing.assert_array_equal(got.windows, want.windows)
        np.testing.assert_array_equal(got.starts, want.starts)
        assert [(i, e.reason) for i, e in got.rejected] == [(i, e.reason) for i, e in want.rejected]
        assert arrays.rebuild_offsets() == reference.rebuild_offsets(), start
        mine, theirs = arrays._assets["a"], reference._assets["a"]
        np.testing.assert_array_equal(mine.last_values, theirs.last_values)
        np.testing.assert_array_equal(mine.value_offsets, theirs.value_offsets)
        np.testing.assert_array_equal(mine.nan_run, theirs.nan_run)
        assert mine.in_dropout == theirs.in_dropout
        windows_made += len(got.ends)
        start = stop
    assert windows_made > 200


def test_parse_fill_bench_runs_and_compares() -> None:
    """Smoke version of bench/parse_fill.py (one round, HEAD as the baseline): every case is
    measured against the baseline from git, and the two give the same readings and windows."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True).returncode:
        pytest.skip("not a git checkout: no baseline revision to load")
    cmd = [sys.executable, "bench/parse_fill.py", "--runs", "1", "--baseline", "HEAD"]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    cases = [line for line in done.stdout.splitlines() if line.startswith(("parse,", "window,"))]
    assert len(cases) == 7 and all(line.endswith("x") for line in cases), done.stdout
