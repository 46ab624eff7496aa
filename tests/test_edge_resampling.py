"""Live resampling: the stream makes the offline grid rows whatever the batches, keeps what a
rebuild needs in the rebuild point, and a resampled model scores live like offline."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ServedModel, StreamProcessor
from memae_ts.connectors.resampling import ResampledBuffers, StreamResampler
from memae_ts.edge.model import load_served_model
from processor_fakes import MeanEngine, Msg, ScriptedPolls
from prometheus_client import CollectorRegistry
from runtime_bundles import random_bundle, write_bundle

from memae_ts.detection.scoring import score_windows
from memae_ts.engines import load_engine
from memae_ts.io.data import SensorData
from memae_ts.io.resample import ResampleSpec, resample_cells, resample_series
from memae_ts.io.windows import segment, window_ends

nan = math.nan
T0_US = 1_796_011_800 * 1_000_000  # 2026-12-01, in microseconds


def irregular(rng: np.random.Generator, n: int, s: int, period_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Times in whole microseconds (what float seconds carry) stored by exception: mostly a few
    seconds apart, some readings exactly on the grid, some silences far beyond the limit; about
    half the cells empty and a few rows with nothing at all."""
    p_us = round(period_s * 1e6)
    times = [T0_US + int(rng.integers(0, 10**7))]
    for _ in range(n - 1):
        r = rng.random()
        if r < 0.05:
            step = int(rng.integers(100, 6000)) * 1_000_000  # a silence
        elif r < 0.2:
            step = (-(-times[-1] // p_us) * p_us) - times[-1] or p_us  # onto the grid
        else:
            step = int(rng.exponential(0.8 * p_us)) + 1
        times.append(times[-1] + step)
    values = rng.normal(size=(n, s)).round(3) + np.arange(s)
    values[rng.random((n, s)) < 0.5] = nan
    values[rng.random(n) < 0.03] = nan
    return np.array(times, dtype=np.int64), values


def batches(rng: np.random.Generator, n: int, largest: int) -> list[tuple[int, int]]:
    cuts, start = [], 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, largest + 1)))
        cuts.append((start, stop))
        start = stop
    return cuts


@dataclass
class Streamed:
    ts: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    trigger: np.ndarray  # global reading index


def stream(
    spec: ResampleSpec, times_us: np.ndarray, values: np.ndarray, cuts: list[tuple[int, int]]
) -> Streamed:
    res = StreamResampler(spec, values.shape[1])
    parts = []
    for lo, hi in cuts:
        rows = res.extend("a", 0, times_us[lo:hi] / 1e6, values[lo:hi], np.arange(lo, hi))
        assert not rows.rejected
        parts.append((rows.ts, rows.values, rows.offsets, rows.trigger + lo))
    return Streamed(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


def collapse_empty_runs(values: np.ndarray) -> np.ndarray:
    """Rows the stream emits: every row but the second and later of a run without any value."""
    empty = np.isnan(values).all(axis=1)
    return ~(empty & np.concatenate([[False], empty[:-1]]))


def decided_up_to(spec: ResampleSpec, times: np.ndarray, values: np.ndarray) -> int:
    """Straight from the docstring of connectors/resampling.py: up to which time every grid
    point is decided once readings[: len(times)] have arrived."""
    newest = int(times[-1])
    if spec.method == "hold":
        return newest
    bound = newest
    for j in range(values.shape[1]):
        seen = times[~np.isnan(values[:, j])]
        if len(seen) and newest - int(seen[-1]) < spec.limit_ns():
            bound = min(bound, int(seen[-1]))
    return bound


CASES = [
    (ResampleSpec(5.0, "hold", 60.0), 0),
    (ResampleSpec(5.0, "hold"), 1),
    (ResampleSpec(2.5, "interpolate", 60.0), 2),
    (ResampleSpec(10.0, "interpolate"), 3),
    (ResampleSpec(0.75, "hold", 20.0), 4),
    (ResampleSpec(0.75, "interpolate", 20.0), 5),
]


@pytest.mark.parametrize(("spec", "seed"), CASES)
def test_stream_in_random_batches_makes_the_offline_rows(spec, seed):
    rng = np.random.default_rng(seed)
    n, s = 400, 3
    times_us, values = irregular(rng, n, s, spec.period_seconds)
    times_ns = times_us * 1000
    grid, offline, _, _ = resample_series(times_ns, values, spec)

    one_by_one = stream(spec, times_us, values, [(i, i + 1) for i in range(n)])
    for cuts in (batches(rng, n, 5), batches(rng, n, 60), [(0, n)]):
        got = stream(spec, times_us, values, cuts)
        # batches change nothing: not the rows, not their offsets, not the reading that emitted them
        np.testing.assert_array_equal(got.ts, one_by_one.ts)
        np.testing.assert_array_equal(got.values, one_by_one.values)
        np.testing.assert_array_equal(got.offsets, one_by_one.offsets)
        np.testing.assert_array_equal(got.trigger, one_by_one.trigger)

    keep = collapse_empty_runs(offline)
    assert (~keep).sum() > 10  # the silences were long enough to collapse something
    expected_grid, expected = grid[keep], offline[keep]
    got = one_by_one
    # every grid point decided by the readings is out, nothing else
    assert len(got.ts) == (expected_grid <= decided_up_to(spec, times_ns, values)).sum()
    if spec.method == "hold":
        assert len(got.ts) == len(expected_grid)
    np.testing.assert_array_equal(got.ts, expected_grid[: len(got.ts)] / 1e9)
    np.testing.assert_array_equal(got.values, expected[: len(got.ts)])  # bitwise, both methods

    # a row's offset is the oldest reading its values come from (offset = reading index here)
    cells = resample_cells(times_ns, values, expected_grid[: len(got.ts)], spec.method, spec.limit_ns())
    known = cells.left >= 0
    some = known.any(axis=1)
    oldest = np.where(known, cells.left, n).min(axis=1)
    np.testing.assert_array_equal(got.offsets[some], oldest[some])
    # each row was emitted by the first reading after which it is decided
    decided = np.array([decided_up_to(spec, times_ns[: j + 1], values[: j + 1]) for j in range(n)])
    np.testing.assert_array_equal(got.trigger, np.searchsorted(decided, got.ts * 1e9 - 0.5, side="left"))


def test_hold_emits_each_grid_point_with_the_first_reading_at_or_after_it():
    res = StreamResampler(ResampleSpec(10.0), 2)
    rows = res.extend("a", 0, np.array([3.0, 9.0]), np.array([[1, 2], [nan, 3]]), np.array([0, 1]))
    assert len(rows.ts) == 0  # 10 s not reached yet
    rows = res.extend("a", 0, np.array([10.0, 34.0]), np.array([[4, nan], [5, 6]]), np.array([2, 3]))
    np.testing.assert_array_equal(rows.ts, [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(rows.values, [[4, 3], [4, 3], [4, 3]])
    np.testing.assert_array_equal(rows.trigger, [0, 1, 1])
    np.testing.assert_array_equal(rows.offsets, [1, 1, 1])  # sensor 1 still holds offset 1
    assert res.needed_offset("a") == 3  # the 34 s reading holds both sensors now


def test_interpolate_waits_for_a_quiet_sensor_up_to_the_limit():
    res = StreamResampler(ResampleSpec(10.0, "interpolate", 60.0), 2)
    rows = res.extend("a", 0, np.array([0.0]), np.array([[0.0, 0.0]]), np.array([0]))
    np.testing.assert_array_equal(rows.ts, [0.0])  # on the grid: decided at once
    rows = res.extend("a", 0, np.array([15.0, 25.0]), np.array([[1.5, nan], [2.5, nan]]), np.array([1, 2]))
    assert len(rows.ts) == 0  # 10 s needs sensor 1's next reading
    rows = res.extend("a", 0, np.array([40.0]), np.array([[nan, 4.0]]), np.array([3]))
    # sensor 1 is decided up to 40 s, but sensor 0 only up to its last reading (25 s)
    np.testing.assert_array_equal(rows.ts, [10.0, 20.0])
    np.testing.assert_allclose(rows.values, [[1.0, 1.0], [2.0, 2.0]], rtol=0, atol=1e-12)
    # sensor 0 stays silent: once a reading comes 60 s after its last one, nothing can be
    # interpolated past 25 s any more and 30 .. 80 s are decided
    rows = res.extend("a", 0, np.array([85.0]), np.array([[nan, 8.5]]), np.array([4]))
    np.testing.assert_array_equal(rows.ts, [30.0, 40.0, 50.0, 60.0, 70.0, 80.0])
    assert np.isnan(rows.values[:, 0]).all()
    np.testing.assert_allclose(rows.values[:, 1], [3.0, 4.0, 5.0, 6.0, 7.0, 8.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(rows.trigger, [0] * 6)


def test_a_long_silence_is_one_empty_row_not_one_per_period():
    res = StreamResampler(ResampleSpec(1.0, "hold", 60.0), 1)
    res.extend("a", 0, np.array([0.0]), np.array([[1.0]]), np.array([0]))
    rows = res.extend("a", 0, np.array([7 * 86400.0]), np.array([[2.0]]), np.array([1]))
    assert len(rows.ts) == 60 + 1 + 1  # held 1 .. 60 s, one empty row at 61 s, the new reading
    assert rows.ts[60] == 61.0 and np.isnan(rows.values[60, 0])
    assert (rows.values[:60, 0] == 1.0).all()
    assert rows.ts[-1] == 7 * 86400.0 and rows.values[-1, 0] == 2.0


def test_a_reading_not_after_the_newest_is_refused_and_changes_nothing():
    res = StreamResampler(ResampleSpec(10.0), 1)
    ts = np.array([0.0, 10.0, 10.0, 7.0, 10.0000004, 20.0])
    rows = res.extend("a", 0, ts, np.array([[0], [1], [2], [3], [4], [5]]), np.arange(6))
    # the second 10 s reading (and one within a microsecond of it) and the late 7 s one are
    # refused: 10 s keeps the first reading, as offline keeps the first of a repeated time
    np.testing.assert_array_equal(rows.ts, [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(rows.values[:, 0], [0, 1, 5])
    assert [(i, e.reason) for i, e in rows.rejected] == [
        (2, "time_backwards"),
        (3, "time_backwards"),
        (4, "time_backwards"),
    ]
    assert "same time" in rows.rejected[0][1].detail and "went back 3.0" in rows.rejected[1][1].detail
    rows = res.extend("a", 0, np.array([25.0, 1e10, 30.0]), np.array([[6], [7], [8]]), np.array([6, 7, 8]))
    assert [(i, e.reason) for i, e in rows.rejected] == [(1, "bad_timestamp")]
    np.testing.assert_array_equal(rows.values[:, 0], [8])  # 30 s: the 30 s reading itself


def test_the_rebuild_point_covers_held_values_not_yet_used():
    def fed(window: int) -> ResampledBuffers:
        buf = ResampledBuffers(ResampleSpec(10.0, "hold", 600.0), window, 2)
        # a: sensor 0 reports once (offset 0), sensor 1 every 10 s; b on the same partition
        buf.extend("a", 0, np.array([0.0]), np.array([[1.0, 0.0]]), np.array([0]))
        for k in range(1, 6):
            buf.extend("a", 0, np.array([10.0 * k]), np.array([[nan, float(k)]]), np.array([2 * k]))
            buf.extend("b", 0, np.array([10.0 * k]), np.array([[1.0, 1.0]]), np.array([2 * k + 1]))
        return buf

    # a window of one row needs no earlier row: only the held value pins offset 0
    single = fed(1)
    assert single.windows.rebuild_offsets() == {}
    assert single.rebuild_offsets() == {0: 0}

    buf = fed(2)
    assert buf.rebuild_offsets() == {0: 0}  # a's last row holds sensor 0 from offset 0
    buf.extend("a", 0, np.array([60.0]), np.array([[2.0, 6.0]]), np.array([20]))
    assert buf.rebuild_offsets() == {0: 11}  # a needs offset 20 now, b its 50 s reading (11)
    buf.extend("a", 0, np.array([70.0]), np.array([[nan, 7.0]]), np.array([22]))
    assert buf.resampler.needed_offset("a") == 20  # sensor 0's 60 s value is held
    assert buf.rebuild_offsets() == {0: 11}
    assert buf.rebuild_offsets(stale_after_seconds=10.0) == {0: 20}  # b, 20 s behind a: left out


# -- through the processor ----------------------------------------------------------------------


@dataclass
class FakeSource(ScriptedPolls):
    batches: list[list[Msg]] = field(default_factory=list)
    commits: list[tuple[dict[int, int], dict[int, int]]] = field(default_factory=list)
    assigned: set[int] = field(default_factory=lambda: {0, 1})
    replay_until: dict[int, int] = field(default_factory=dict)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return offsets < np.array([self.replay_until.get(int(p), -1) for p in partitions], dtype=np.int64)

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        self.commits.append((dict(next_offsets), dict(rebuild_from)))
        return True


@dataclass
class FakeSink:
    published: list[dict] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)

    def publish_many(self, keys: list[bytes], values: list[bytes]) -> None:
        self.published.extend(json.loads(v) for v in values)

    def dead_letter(self, key, value, reason, detail, source) -> None:  # type: ignore[no-untyped-def]
        self.dead.append(reason)

    def flush(self, timeout_s: float = 60.0) -> int:
        return 0

    def close(self) -> None:
        pass


def processor(model: ServedModel) -> tuple[StreamProcessor, FakeSource, FakeSink]:
    source, sink = FakeSource(), FakeSink()
    metrics = EdgeMetrics(CollectorRegistry())
    return StreamProcessor(lambda *callbacks: source, sink, model, metrics), source, sink  # type: ignore[arg-type]


def messages(rng: np.random.Generator, assets: dict[str, int], n: int, s: int, period_s: float):
    """Readings of several assets (name -> partition) interleaved at random, each asset in its
    time order; offsets count per partition."""
    per_asset = {a: irregular(rng, n, s, period_s) for a in assets}
    names = list(assets)
    order = rng.permutation(np.repeat(np.arange(len(names)), n))
    seen = dict.fromkeys(names, 0)
    next_offset = dict.fromkeys(assets.values(), 0)
    msgs = []
    for which in order.tolist():
        asset = names[which]
        partition = assets[asset]
        times_us, values = per_asset[asset]
        i = seen[asset]
        seen[asset] += 1
        row = [None if math.isnan(v) else v for v in values[i].tolist()]
        value = json.dumps([times_us[i] / 1e6, *row]).encode()
        msgs.append(Msg(partition, next_offset[partition], asset.encode(), value))
        next_offset[partition] += 1
    return per_asset, msgs


def by_asset(records: list[dict]) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for r in records:
        out.setdefault(r["asset"], []).append((r["ts"], r["score"]))
    return out


@pytest.mark.parametrize(("spec", "seed"), CASES)
def test_replaying_from_the_rebuild_point_scores_like_the_uninterrupted_run(spec, seed):
    """A restart after any checkpoint: a fresh daemon that re-reads each partition from the
    committed rebuild point publishes exactly what the uninterrupted one published after that
    checkpoint: no score missing (no new warm-up), none repeated, none different. One asset per
    partition here: the rule that leaves silent assets out of the rebuild point (tested above)
    would otherwise take part."""
    rng = np.random.default_rng(100 + seed)
    _, msgs = messages(rng, {"a": 0, "b": 1}, 250, 3, spec.period_seconds)
    model = ServedModel(MeanEngine(), ["x", "y", "z"], 4, threshold=1.0, version="v1", resample=spec)

    whole, source, sink = processor(model)
    cuts = batches(rng, len(msgs), 40)
    source.batches = [msgs[lo:hi] for lo, hi in cuts]
    published_at = []
    for _ in cuts:
        whole.step()
        published_at.append(len(sink.published))
    assert len(sink.published) > 100
    assert len(source.commits) == len(cuts)

    rewound = 0
    next_offsets: dict[int, int] = {}  # what the broker holds: the last commit of each partition
    rebuild_from: dict[int, int] = {}
    for k in range(len(cuts) - 1):  # a restart after checkpoint k
        committed, rebuild = source.commits[k]
        for p, off in committed.items():
            next_offsets[p] = off
            rebuild_from[p] = rebuild.get(p, off)
        start = dict(rebuild_from)
        rewound += sum(next_offsets[p] - start[p] for p in start)
        replay = [m for m in msgs if m.offset >= start.get(m.partition, 0)]
        fresh, fresh_source, fresh_sink = processor(model)
        fresh_source.replay_until = dict(next_offsets)
        fresh_source.batches = [replay[lo:hi] for lo, hi in batches(rng, len(replay), 40)]
        for _ in range(len(fresh_source.batches)):
            fresh.step()
        assert by_asset(fresh_sink.published) == by_asset(sink.published[published_at[k] :]), k
    assert rewound > 0


def test_a_resampled_bundle_scores_an_irregular_stream_like_offline(tmp_path):
    spec = ResampleSpec(5.0, "hold", 45.0)
    config, weights = random_bundle("mlp", n_sensors=3, window=6, hidden=(16,), latent=4, slots=8)
    config["resample"] = spec.to_config()
    bundle = write_bundle(tmp_path / "model", config, weights)
    model = load_served_model(bundle, engine="numpy")
    assert model.resample == spec
    assert (model.max_gap_seconds, model.max_fill_rows) == (None, 0)  # the grid decides

    rng = np.random.default_rng(7)
    per_asset, msgs = messages(rng, {"p1": 0, "p2": 0}, 300, 3, spec.period_seconds)
    center = np.asarray(config["scaler"]["center"])
    scale = np.asarray(config["scaler"]["scale"])
    for i, m in enumerate(msgs):  # values around the scaler, so scores are not all huge
        ts, *row = json.loads(m.value)
        row = [None if v is None else float(c + sc * v) for v, c, sc in zip(row, center, scale, strict=True)]
        msgs[i] = Msg(m.partition, m.offset, m.key, json.dumps([ts, *row]).encode())
    live, source, sink = processor(model)
    source.batches = [msgs[lo:hi] for lo, hi in batches(rng, len(msgs), 50)]
    for _ in range(len(source.batches)):
        live.step()
    live_scores = by_asset(sink.published)

    engine = load_engine(bundle, engine="numpy")
    for asset, (times_us, values) in per_asset.items():
        grid, resampled, _, _ = resample_series(times_us * 1000, center + scale * values, spec)
        data = SensorData(
            source=asset, sensors=["s0", "s1", "s2"], values=resampled,
            timestamps=pd.to_datetime(grid, utc=True), assets=None, labels=None,
            row_numbers=np.arange(len(grid)) + 2,
        )  # fmt: skip
        ends = window_ends(segment(data, max_gap_seconds=None, max_fill_rows=0), 6)
        scores, _ = score_windows(engine, resampled, ends, 6)
        stamps = data.timestamps[ends].strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
        got = live_scores[asset]
        assert len(ends) > 50
        assert [t for t, _ in got] == stamps  # the same windows, at the grid times
        np.testing.assert_allclose([v for _, v in got], scores, rtol=1e-5, atol=1e-9)


def test_same_windows_tells_a_resampled_model_from_a_plain_one():
    def served(resample: ResampleSpec | None) -> ServedModel:
        return ServedModel(MeanEngine(), ["x"], 4, threshold=1.0, version="v", resample=resample)

    assert served(ResampleSpec(10)).same_windows(served(ResampleSpec(10)))
    assert not served(ResampleSpec(10)).same_windows(served(None))
    assert not served(ResampleSpec(10)).same_windows(served(ResampleSpec(10, "interpolate")))
    assert not served(ResampleSpec(10)).same_windows(served(ResampleSpec(10, limit_seconds=60)))


def test_a_bundle_without_resample_is_served_as_before(tmp_path):
    config, weights = random_bundle("mlp", n_sensors=2, window=4, hidden=(8,), latent=4, slots=8)
    model = load_served_model(write_bundle(tmp_path / "m", config, weights), engine="numpy")
    assert model.resample is None and model.max_fill_rows == 3
    config["resample"] = {"period_seconds": 10, "method": "nearest"}
    with pytest.raises(ValueError, match=r"resample\.method"):
        load_served_model(write_bundle(tmp_path / "bad", config, weights), engine="numpy")


def test_score_records_carry_grid_times_and_unplaceable_readings_are_dead_letters():
    spec = ResampleSpec(10.0, "hold", 60.0)
    model = ServedModel(MeanEngine(), ["x", "y"], 2, threshold=1.0, version="v1", resample=spec)
    proc, source, sink = processor(model)

    def msg(offset: int, ts: float, x: float | None, y: float | None) -> Msg:
        return Msg(0, offset, b"a", json.dumps([ts, x, y]).encode())

    source.batches = [
        [msg(0, 3, 1, 2), msg(1, 14, 3, None), msg(2, 14, 9, 9), Msg(0, 3, b"a", b"{"), msg(4, 31, None, 4)],
        [msg(5, 40, 5, 5)],
    ]
    proc.step()
    # grid rows 10 (1, 2), 20 (3, 2), 30 (3, 2): windows of 2 end at 20 and 30
    assert [r["ts"] for r in sink.published] == ["1970-01-01T00:00:20Z", "1970-01-01T00:00:30Z"]
    assert [r["score"] for r in sink.published] == [pytest.approx(2.0), pytest.approx(2.5)]
    assert sink.dead == ["time_backwards", "bad_json"]
    assert source.commits == [({0: 5}, {0: 0})]  # the 30 s row holds y from offset 0
    proc.step()
    assert [r["ts"] for r in sink.published][2:] == ["1970-01-01T00:00:40Z"]
    assert sink.published[2]["score"] == pytest.approx((3 + 2 + 5 + 5) / 4)  # 31 s came after 30 s
    assert source.commits[1] == ({0: 6}, {0: 5})


@pytest.mark.slow
def test_live_scores_of_a_model_fitted_with_resample_are_the_offline_scores(tmp_path):
    """The whole path: `fit --resample` on a historian export (rows only when something
    changed, empty cells for tags that did not), then the daemon's processor fed the CSV as
    `memae-ts replay` sends it scores every grid row `score` scores, with the same score."""
    pytest.importorskip("torch")
    from memae_ts.edge.replay import read_messages

    from memae_ts import MemAE

    rng = np.random.default_rng(12)
    starts = np.cumsum(rng.uniform(60, 400, 150))
    t = np.sort(
        np.unique((starts[:, None] + np.cumsum(rng.uniform(0.5, 4, (150, 6)), axis=1)).ravel().round(3))
    )
    frame = pd.DataFrame(
        {
            "timestamp": (pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(t, unit="s")).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": np.round(50 + 10 * np.sin(t / 600) + rng.normal(0, 0.05, t.size), 2),
            "temp": np.round(30 + 2 * np.sin(t / 900), 2),
        }
    )
    frame.loc[rng.random(len(frame)) < 0.5, "level"] = np.nan  # not exported: unchanged
    frame.loc[rng.random(len(frame)) < 0.5, "temp"] = np.nan
    path = tmp_path / "pi.csv"
    frame.to_csv(path, index=False)

    params = {"window": 8, "channels": (4,), "latent": 4, "memory_slots": 8, "epochs": 1, "seed": 0}
    model = MemAE(**params, resample="10s", resample_limit="5min").fit(path)
    model.save(tmp_path / "model")
    scored, result = model.score_rows(path)
    ok = np.isfinite(result.score)
    offline = dict(zip(scored.timestamps[ok].strftime("%Y-%m-%dT%H:%M:%SZ"), result.score[ok], strict=True))
    assert len(offline) > 200

    served = load_served_model(tmp_path / "model", engine="numpy")
    assert served.resample == ResampleSpec(10.0, "hold", 300.0)
    proc, source, sink = processor(served)
    msgs = [
        Msg(0, i, key, value) for i, (key, value) in enumerate(read_messages(path, sensors=served.sensors))
    ]
    source.batches = [msgs[lo:hi] for lo, hi in batches(rng, len(msgs), 100)]
    for _ in range(len(source.batches)):
        proc.step()
    live = {r["ts"]: r["score"] for r in sink.published}
    assert not sink.dead
    assert sorted(live) == sorted(offline)
    np.testing.assert_allclose([live[k] for k in offline], list(offline.values()), rtol=1e-5, atol=1e-9)
