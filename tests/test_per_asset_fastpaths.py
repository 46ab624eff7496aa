"""The small-batch paths a daemon with many slow assets takes (a few readings per asset and poll)
against the array paths they stand in for: the same windows, alarm decisions, score records,
dead letters and commits.

Why: at live rates each asset brings one to a few readings per poll, and the per-asset numpy
work on such tiny arrays was most of the daemon's CPU per reading (bench/per_asset.py). The
small paths (``WindowBuffers._small_clean``, ``AlarmState._counts_small``, the processor's
no-history case, the cached metric children) must change no output."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from memae_ts.connectors import buffers as buffers_module
from memae_ts.connectors.buffers import WindowBuffers
from memae_ts.connectors.drift import TrainingRange
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ProcessingConfig, ServedModel, StreamProcessor
from prometheus_client import CollectorRegistry
from test_edge_processor import FakeSink, FakeSource, MeanEngine, Msg

from memae_ts.detection import alarms as alarms_module
from memae_ts.detection.alarms import AlarmRule, AlarmState


def _messy_rows(rng: np.random.Generator, n: int, sensors: int) -> tuple[np.ndarray, np.ndarray]:
    """One asset's rows: 1 s apart, now and then a 900 s gap (a new series), a step back in
    time (refused, or within the tolerance), missing values (filled, or a dropout)."""
    steps = np.where(rng.random(n) < 0.02, 900.0, 1.0)
    steps[rng.random(n) < 0.02] = -3.0
    steps[rng.random(n) < 0.02] = -0.2
    ts = 1_700_000_000.0 + np.cumsum(steps)
    values = rng.normal(0, 1, (n, sensors))
    values[rng.random((n, sensors)) < 0.03] = np.nan
    dropout = rng.random(n) < 0.01  # a sensor out for several rows: the series restarts
    for i in np.flatnonzero(dropout):
        values[i : i + 6, 0] = np.nan
    return ts, values


def _state(buffers: WindowBuffers) -> dict:
    out = {}
    for asset, s in buffers._assets.items():
        out[asset] = (
            s.tail.tolist(), s.tail_offsets.tolist(), s.last_ts,
            np.nan_to_num(s.last_values, nan=-1).tolist(), s.value_offsets.tolist(), s.nan_run.tolist(),
            s.in_dropout, s.fresh, s.partition,
        )  # fmt: skip
    return out


@pytest.mark.parametrize("max_fill_rows", [0, 2])
def test_small_batches_window_as_the_array_path_does(
    monkeypatch: pytest.MonkeyPatch, max_fill_rows: int
) -> None:
    """Three assets' messy rows fed in runs of 1-9: per call the same windows, ends, stretch
    starts and refusals with and without the small-batch path, and the same buffered state
    and rebuild offsets after every call."""
    results = []
    for small in (buffers_module._SMALL, 0):
        monkeypatch.setattr(buffers_module, "_SMALL", small)
        rng = np.random.default_rng(5)
        chunks = random.Random(5)
        buffers = WindowBuffers(
            4, 3, max_gap_seconds=600, max_fill_rows=max_fill_rows, backwards_tolerance_seconds=0.5
        )
        streams = {a: _messy_rows(rng, 400, 3) for a in ("a", "b", "c")}
        at = dict.fromkeys(streams, 0)
        offset = 0
        calls = []
        while any(at[a] < 400 for a in streams):
            for asset, (ts, values) in streams.items():
                lo = at[asset]
                hi = min(400, lo + chunks.choice([1, 1, 1, 2, 3, 4, 8, 9]))
                if lo == hi:
                    continue
                at[asset] = hi
                offsets = np.arange(offset, offset + hi - lo, dtype=np.int64)
                offset += hi - lo
                made = buffers.extend(asset, ord(asset) % 2, ts[lo:hi], values[lo:hi], offsets)
                starts = None if made.starts is None else made.starts.tolist()
                rejected = [(i, e.reason, e.detail) for i, e in made.rejected]
                calls.append((made.ends.tolist(), made.windows.tolist(), starts, rejected))
                calls.append((_state(buffers), buffers.rebuild_offsets(600)))
        results.append(calls)
    small, reference = results
    assert len(small) == len(reference)
    for k, (got, want) in enumerate(zip(small, reference, strict=True)):
        assert got == want, k
    windows = sum(len(c[0]) for c in reference[::2])
    refused = sum(len(c[3]) for c in reference[::2])
    assert windows > 600 and refused > 5


def test_the_alarm_rule_counts_a_few_windows_as_the_array_path_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random scores (with NaN and inf, stretch starts) stepped through in runs of 1-20 windows:
    the same alarm flags, episodes, snapshots and signatures with the small path and without."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        k, n, least = int(rng.integers(1, 4)), int(rng.integers(4, 8)), int(rng.integers(1, 6))
        rule = AlarmRule(k=k, n=n, min_windows=least)
        scores = rng.gamma(2, 0.5, 200)
        scores[rng.random(200) < 0.05] = np.nan
        scores[rng.random(200) < 0.02] = np.inf
        times, contributions = np.arange(200.0), rng.random((200, 3))
        starts = rng.random(200) < 0.03
        outs = []
        for small in (alarms_module._SMALL, 0):
            monkeypatch.setattr(alarms_module, "_SMALL", small)
            state, runs, i = AlarmState(rule, "a", 3), random.Random(trial), 0
            steps = []
            while i < 200:
                j = min(200, i + runs.choice([1, 1, 2, 3, 5, 9, 20]))
                ev = state.run(times[i:j], scores[i:j], contributions[i:j], starts[i:j])
                episodes = [(e.start, e.end, e.peak, e.windows, e.end_reason) for e in ev.opened + ev.closed]
                steps.append((ev.alarm.tolist(), episodes, state.snapshot(), state.signature()))
                i = j
            outs.append(steps)
        assert outs[0] == outs[1], trial
        assert any(any(s[0]) for s in outs[0]) or trial % 7  # most trials raise an alarm


def _stream(seed: int, assets: int, per_poll: int, polls: int) -> list[list[Msg]]:
    """Polls of ``assets`` assets with ``per_poll`` readings each, interleaved; missing values,
    gaps, a step back in time and unreadable messages now and then; two partitions."""
    rng = random.Random(seed)
    names = [f"m{i:03d}" for i in range(assets)]
    clock = {a: 1_700_000_000.0 + rng.random() for a in names}
    offsets = [0, 0]
    out = []
    for _ in range(polls):
        order = [a for a in names for _ in range(per_poll)]
        rng.shuffle(order)
        poll = []
        for a in order:
            clock[a] += rng.choice([1.0] * 60 + [900.0, -5.0])
            values = [None if rng.random() < 0.03 else round(rng.gauss(1.0, 0.4), 3) for _ in range(2)]
            body = json.dumps([clock[a], *values]).encode() if rng.random() > 0.01 else b"{"
            p = int(a[1:]) % 2
            poll.append(Msg(p, offsets[p], a.encode(), body, timestamp=int(clock[a] * 1000)))
            offsets[p] += 1
        out.append(poll)
    return out


class EpisodeSink(FakeSink):
    episodes: list[dict]

    def publish_episodes(self, keys: list[bytes], values: list[bytes]) -> None:
        self.episodes = [*getattr(self, "episodes", []), *map(json.loads, values)]


def _run(polls: list[list[Msg]], hop: int) -> tuple[dict, list, dict, dict, list]:
    log: list[str] = []
    source, sink = FakeSource(log), EpisodeSink(log)
    model = ServedModel(
        MeanEngine(), ["x", "y"], 4, threshold=1.1, version="v1", max_gap_seconds=600.0, max_fill_rows=2,
        period_seconds=1.0, alarm_rule=AlarmRule(k=2, n=3, min_windows=1),
        training_range=TrainingRange(np.array([0.3, 0.0]), np.array([1.7, 1.5])),
    )  # fmt: skip
    metrics = EdgeMetrics(CollectorRegistry())
    proc = StreamProcessor(lambda *callbacks: source, sink, model, metrics, ProcessingConfig(hop=hop))  # type: ignore[arg-type]
    source.batches = [list(p) for p in polls]
    for _ in polls:
        proc.step()
    by_asset: dict[str, list] = {}
    for record in sink.published:
        by_asset.setdefault(record["asset"], []).append(record)
    value = metrics.registry.get_sample_value
    gauges = {
        a: (
            value("memae_ts_anomaly_score", {"asset": a}),
            value("memae_ts_alarm_active", {"asset": a}),
            # drift: readings, the newest reading's time, readings outside the training range
            value("memae_ts_asset_readings_total", {"asset": a, "model": "default"}),
            value("memae_ts_asset_last_reading_timestamp_seconds", {"asset": a, "model": "default"}),
            [
                value("memae_ts_out_of_range_readings_total", {"asset": a, "model": "default", "sensor": s})
                for s in ("x", "y")
            ],
        )
        for a in by_asset
    }
    # Closed episodes only: an "opened" record shows the episode as far as the poll it opened
    # in went, which depends on where polls end.
    closed = [e for e in getattr(sink, "episodes", []) if e["event"] == "closed"]
    episodes = sorted(closed, key=lambda e: (e["asset"], e["start"]))
    return by_asset, sink.dead, source.commits[-1], gauges, episodes


@pytest.mark.parametrize("hop", [1, 10])
def test_many_assets_with_a_few_readings_per_poll_score_as_one_big_poll(hop: int) -> None:
    """80 assets x 2 readings per poll over 40 polls (the small-batch paths) against the same
    readings in one poll (the array paths): per asset the same score records, alarms included,
    the same dead letters in the same order, the same last commit, latest-score gauges and
    closed-episode records (whose order across assets follows the polls)."""
    polls = _stream(3, assets=80, per_poll=2, polls=40)
    small = _run(polls, hop)
    big = _run([[m for poll in polls for m in poll]], hop)
    assert small[0] == big[0]
    assert small[1] == big[1] and small[1].count("bad_json") > 20
    assert small[2] == big[2]
    assert small[3] == big[3]
    assert sum(g[4][0] + g[4][1] for g in big[3].values()) > 100  # values out of the training range
    assert small[4] == big[4] and len(big[4]) > 10
    records = sum(map(len, big[0].values()))
    assert records > (5000 if hop == 1 else 450)
    assert any(r["alarm"] for rs in big[0].values() for r in rs)


def test_a_forgotten_asset_gets_its_score_series_back_on_its_next_score() -> None:
    """The labelled children are cached per asset; forgetting the asset (another daemon owns it
    now) removes its series, and a later score must create them again, not set a detached one."""
    metrics = EdgeMetrics(CollectorRegistry())
    metrics.observe_score("pump-1", 0.5, 0.4, False)
    metrics.observe_alarms("pump-1", True, 1, [], None)
    metrics.forget_assets(["pump-1"])
    assert metrics.registry.get_sample_value("memae_ts_anomaly_score", {"asset": "pump-1"}) is None
    assert metrics.registry.get_sample_value("memae_ts_alarm_active", {"asset": "pump-1"}) is None
    metrics.observe_score("pump-1", 2.0, 1.6, True)
    metrics.observe_alarms("pump-1", False, 0, ["cleared"], None)
    assert metrics.registry.get_sample_value("memae_ts_anomaly_score", {"asset": "pump-1"}) == 2.0
    assert metrics.registry.get_sample_value("memae_ts_anomaly_score_normalised", {"asset": "pump-1"}) == 1.6
    assert metrics.registry.get_sample_value("memae_ts_alarm_active", {"asset": "pump-1"}) == 0.0
    assert metrics.registry.get_sample_value("memae_ts_anomalies_total", {"asset": "pump-1"}) == 1.0


DRIFT_SERIES = ("memae_ts_asset_readings", "memae_ts_out_of_range", "memae_ts_asset_last_reading")


def test_drift_metrics_of_a_slice_at_once_match_those_asset_by_asset() -> None:
    """_Lane.observe_assets (one set of array calls per slice) against _Lane.observe per asset:
    the same readings counts, newest-reading times and out-of-range counts per sensor."""
    rng = np.random.default_rng(2)
    names = [f"m{i}" for i in range(30)]
    sizes = rng.integers(1, 6, len(names))
    n = int(sizes.sum())
    ts = 1_700_000_000.0 + rng.permutation(n).astype(float)  # not in order within an asset
    values = rng.normal(1.0, 0.6, (n, 2))
    values[rng.random((n, 2)) < 0.1] = np.nan
    order = rng.permutation(n)  # each asset's rows scattered over the poll
    by_asset = list(zip(names, np.split(order, np.cumsum(sizes)[:-1]), strict=True))
    samples = []
    for batched in (True, False):
        log: list[str] = []
        model = ServedModel(
            MeanEngine(), ["x", "y"], 4, threshold=1.0, version="v1",
            training_range=TrainingRange(np.array([0.3, np.nan]), np.array([1.7, 1.5])),
        )  # fmt: skip
        metrics = EdgeMetrics(CollectorRegistry())
        source = FakeSource(log)
        proc = StreamProcessor(lambda *c, s=source: s, FakeSink(log), model, metrics)  # type: ignore[misc]
        lane = proc.lanes[0]
        for _ in range(2):  # the second time, the newest time carried from the first
            if batched:
                lane.observe_assets(by_asset, ts, values)
            else:
                for asset, js in by_asset:
                    lane.observe(asset, ts[js], values[js])
        samples.append(
            sorted(
                (s.name, tuple(sorted(s.labels.items())), s.value)
                for family in metrics.registry.collect()
                if family.name.startswith(DRIFT_SERIES)
                for s in family.samples
                if not s.name.endswith("_created")
            )
        )
    assert samples[0] == samples[1]
    assert sum(v for name, _, v in samples[0] if name == "memae_ts_out_of_range_readings_total") > 10


def test_per_asset_bench_runs_compares_and_profiles() -> None:
    """Smoke version of bench/per_asset.py (30 assets, 2 timed polls): both hops, the baseline
    from git beside the working tree with identical outputs (exit 0), and the profile by part."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True).returncode:
        pytest.skip("not a git checkout: no baseline revision to load")
    cmd = [sys.executable, "bench/per_asset.py", "--assets", "30", "--per-asset", "1,3", "--hops", "1,10",
           "--polls", "2", "--runs", "1", "--baseline", "HEAD", "--profile"]  # fmt: skip
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line[:9].strip() in ("1", "3")]
    assert [(r[0], r[1]) for r in rows] == [("1", "1"), ("1", "10"), ("3", "1"), ("3", "10")]
    assert all(r[-1].endswith("x") for r in rows)  # the ratio to the baseline
    assert "OUTPUT DIFFERS" not in done.stdout
    assert "buffers (WindowBuffers.extend)" in done.stdout and "alarm rule" in done.stdout
