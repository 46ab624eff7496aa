"""Scoring hop (memae_ts.detection.hop): every k-th window end per asset, on the clock, the same rows and
numbers offline (`memae-ts score --hop`) and live (the edge daemon's [processing] hop), across
a SIGKILL and restart (the rebuild keeps the phase), on messy data: two interleaved assets, one
with jittered timestamps, a time gap each, isolated missing values (forward-filled) and a
dropout longer than the fill limit (a new stretch)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from edge_process import read_topic
from kafka_service import REPO

from memae_ts.detection.hop import (
    NO_PREVIOUS,
    carry_starts,
    check_hop,
    hop_interval_us,
    hop_keep,
    model_period_seconds,
)
from memae_ts.errors import DataError

HOP = 10


# -- the rule itself (no broker) --------------------------------------------------------------


def _previous(times: np.ndarray, first: int = NO_PREVIOUS) -> np.ndarray:
    return np.concatenate([[first], times[:-1]]).astype(np.int64)


def test_regular_data_scores_the_windows_ending_on_multiples_of_k_periods() -> None:
    period_us = 60_000_000
    times = np.arange(1_000, 1_100) * period_us  # minute 1000 .. 1099
    keep = hop_keep(times, _previous(times, 999 * period_us), hop_interval_us(HOP, 60.0))
    assert (times[keep] // period_us).tolist() == [1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070, 1080, 1090]
    # Without a row before it, a window is scored (a stretch of a one-row window, the first row).
    assert hop_keep(times[3:4], _previous(times[3:4]), hop_interval_us(HOP, 60.0)).tolist() == [True]


def test_split_calls_give_the_same_rows_as_one_call_and_left_out_starts_move_on() -> None:
    """The daemon sees a stream in slices of any size; the rows kept must not depend on where
    the slices are cut, and a stretch start the hop leaves out is reported at the next
    scored window (the alarm rule forgets there)."""
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.integers(900_000, 1_100_000, 500))  # ~1 s with jitter
    interval = hop_interval_us(7, 1.0)
    whole = hop_keep(times, _previous(times), interval)
    parts = [hop_keep(times[lo:hi], _previous(times, NO_PREVIOUS)[lo:hi], interval)
             for lo, hi in [(0, 1), (1, 50), (50, 51), (51, 300), (300, 500)]]  # fmt: skip
    assert np.array_equal(np.concatenate(parts), whole)
    # About one window in 7 (jitter moves a few across interval boundaries).
    assert 500 / 7 - 8 <= whole.sum() <= 500 / 7 + 8

    keep = np.array([True, False, False, True, False, True, False])
    starts = np.array([False, True, False, False, False, False, True])
    flags, pending = carry_starts(keep, starts, False)
    assert flags.tolist() == [False, True, False] and pending  # the last one waits for the next call
    flags, pending = carry_starts(np.array([False, True]), np.array([False, False]), True)
    assert flags.tolist() == [True] and not pending


def test_bad_hops_and_unknown_periods_are_named() -> None:
    assert check_hop("3") == 3
    for bad in (0, -2, "x", 2.5, True):
        with pytest.raises(DataError, match="--hop must be a whole number"):
            check_hop(bad, "--hop")
    with pytest.raises(DataError, match=r"processing\.hop = 10 needs the model's sampling period"):
        hop_interval_us(10, None, "processing.hop")
    assert model_period_seconds({"resample": {"period_seconds": 5}, "data": {"period_seconds": 60}}) == 5
    assert model_period_seconds({"data": {"period_seconds": 60.0}}) == 60
    assert model_period_seconds({"data": {}}) is None


# -- offline = live on the real broker ---------------------------------------------------------


def _messy_csv(src: Path, dst: Path, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    base = pd.read_csv(src)
    sensors = [c for c in base.columns if c not in ("timestamp", "anomaly")]
    parts = []
    for k, asset in enumerate(["pump-a", "pump-b"]):
        frame = base.copy()
        t = pd.to_datetime(frame.timestamp)
        if k == 1:  # a clock that jitters by up to 4 s around the minute
            t = t + pd.to_timedelta(rng.integers(-4000, 4000, len(frame)), unit="ms")
        frame["timestamp"] = (t + pd.Timedelta(seconds=7 * k)).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        frame = frame.drop(index=range(200 + 50 * k, 210 + 50 * k))  # 10 minutes missing: a gap
        for r in rng.choice(len(frame), 25, replace=False):  # isolated missing values: filled
            frame.iloc[r, frame.columns.get_loc(sensors[rng.integers(len(sensors))])] = np.nan
        frame.iloc[400:405, frame.columns.get_loc(sensors[0])] = np.nan  # beyond the fill limit
        frame.insert(1, "asset", asset)
        parts.append(frame)
    pd.concat(parts).sort_values("timestamp", kind="stable").to_csv(dst, index=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def _key(asset: str, ts: str) -> tuple[str, int]:
    return asset, int(pd.Timestamp(ts).value // 1000)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_live_hop_scores_the_offline_rows_with_the_offline_numbers_across_a_sigkill(
    tmp_path, kafka_broker, kafka_names, edge_data, edge_daemons
) -> None:
    messy, every, hopped = tmp_path / "messy.csv", tmp_path / "every.csv", tmp_path / "hop.csv"
    _messy_csv(edge_data.csv, messy)
    for out, hop in ((every, "1"), (hopped, str(HOP))):
        done = _cli("score", str(edge_data.model), str(messy), "-o", str(out), "--asset-column", "asset",
                    "--hop", hop)  # fmt: skip
        assert done.returncode == 0, done.stderr
    all_rows = pd.read_csv(every).dropna(subset=["score"])
    offline = pd.read_csv(hopped).dropna(subset=["score"])
    # The engine sees about a tenth of the windows (jitter and stretch ends move a few).
    assert abs(len(offline) - len(all_rows) / HOP) <= 8
    assert set(offline.asset) == {"pump-a", "pump-b"}
    # The hopped scores are the same numbers as those of the same rows without a hop.
    rows = list(zip(offline.asset, offline.timestamp, strict=True))
    same = all_rows.set_index(["asset", "timestamp"]).loc[rows]
    np.testing.assert_allclose(same.score.to_numpy(), offline.score.to_numpy(), rtol=1e-6)

    kafka_broker.create_topic(kafka_names.input, partitions=1)
    config = {"processing": {"hop": HOP}}
    first = edge_daemons("edge-1", batch_size=20, config=config).start()
    producer = subprocess.Popen(
        [sys.executable, "-m", "memae_ts.cli", "replay", str(messy), "--topic", kafka_names.input,
         "--brokers", kafka_broker.bootstrap, "--rate", "250"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(read_topic(kafka_broker.bootstrap, kafka_names.output, 40, timeout=2)) < 40:
            assert time.monotonic() < deadline, first.logs()[-3000:]
        first.kill()  # mid-stream: the second daemon rebuilds the windows from the committed point
        second = edge_daemons("edge-2", batch_size=20, config=config).start()
        out, _ = producer.communicate(timeout=120)
    finally:  # a failure above must not leave the replay running (a ResourceWarning in a later test)
        if producer.poll() is None:
            producer.kill()
            producer.communicate()
    assert producer.returncode == 0, out.decode(errors="replace")[-2000:]

    want = {_key(r.asset, r.timestamp): r for r in offline.itertuples()}
    deadline = time.monotonic() + 120
    while True:
        records = read_topic(kafka_broker.bootstrap, kafka_names.output, len(offline), timeout=5)
        live = {}
        for rec in records:
            body = rec.json()
            live.setdefault(_key(body["asset"], body["ts"]), []).append(body)
        if set(want) <= set(live) or time.monotonic() > deadline:
            break
    assert set(live) == set(want), (
        f"missing {sorted(set(want) - set(live))[:5]}, extra {sorted(set(live) - set(want))[:5]}\n"
        + second.logs()[-3000:]
    )
    for key, row in want.items():
        for body in live[key]:  # a re-scored window after the kill must agree too
            assert body["score"] == pytest.approx(row.score, rel=1e-5, abs=1e-9), key
    name = "memae_ts_windows_skipped_by_hop_total"
    skipped = [line for line in second.metrics().splitlines() if line.startswith(name)]
    assert skipped and float(skipped[0].split()[-1]) > 0
