"""Chaos against the real broker (issue #14): several assets with missing values and time gaps,
three SIGKILLs of a daemon while it scores, one SIGKILL of the broker, one member joining and
one leaving; afterwards every score `memae-ts score` gives offline is in the output topic with
the same values (0 missing, 0 mismatched), and the duplicates (at-least-once) are reported.

Bounded: 1,800 readings replayed at 150/s, a seeded plan of faults; about a minute. Longer
soaks belong in bench/.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kafka_service import REPO
from test_edge_kafka import assert_matches_offline, by_ts, join_replay, wait_count

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

ASSETS = [f"pump-{k}" for k in range(5)]
ROWS = 360


def chaos_csv(edge_data, tmp_path: Path, rng: np.random.Generator) -> tuple[Path, pd.DataFrame]:  # type: ignore[no-untyped-def]
    """Five assets, each 360 one-minute rows of the plant data (from different hours), with
    short dropouts (forward-filled), one long dropout (the series splits) and one time gap
    beyond max_gap (the window restarts); interleaved in time. Returns it and its offline
    scores (scored rows only)."""
    base = pd.read_csv(edge_data.csv)
    sensors = [c for c in base.columns if c not in ("timestamp", "anomaly")]
    frames = []
    for k, asset in enumerate(ASSETS):
        f = base.iloc[60 * k : 60 * k + ROWS].reset_index(drop=True)
        for start in rng.integers(10, ROWS - 10, 6):  # short: filled (max_fill_rows is 3)
            f.loc[start : start + int(rng.integers(0, 3)), sensors[int(rng.integers(len(sensors)))]] = np.nan
        long = int(rng.integers(40, ROWS - 40))
        f.loc[long : long + 5, sensors[int(rng.integers(len(sensors)))]] = np.nan
        gap = int(rng.integers(40, ROWS - 40))
        times = pd.to_datetime(f.timestamp)
        times[gap:] += pd.Timedelta(minutes=15)  # max_gap is 180 s
        f["timestamp"] = times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        frames.append(f.assign(asset=asset))
    multi = pd.concat(frames).sort_values("timestamp", kind="stable").drop(columns=["anomaly"])
    csv = tmp_path / "chaos.csv"
    multi.to_csv(csv, index=False)
    scores = tmp_path / "chaos.scores.csv"
    subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "score", str(edge_data.model), str(csv), "-o", str(scores),
         "--asset-column", "asset"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return csv, pd.read_csv(scores).dropna(subset=["score"]).reset_index(drop=True)


# Commit after every poll (the default), and at most every 500 ms ([kafka] commit_interval_ms):
# with the interval a kill leaves more readings uncommitted (more duplicates), and a member that
# leaves or gives partitions away commits them first; neither may lose or change a score.
@pytest.mark.parametrize("commit_interval_ms", [0, 500], ids=["commit-every-poll", "commit-interval"])
def test_kills_restarts_and_rebalances_lose_and_change_no_score(
    kafka_broker, kafka_names, edge_data, edge_daemons, tmp_path, record_property, replays, commit_interval_ms
):
    rng = np.random.default_rng(14)
    csv, offline = chaos_csv(edge_data, tmp_path, rng)
    kafka_broker.create_topic(kafka_names.input, partitions=3)
    restarts = iter(range(100))

    def daemon(name: str):  # type: ignore[no-untyped-def]
        return edge_daemons(
            f"{name}-{next(restarts)}",
            batch_size=20,
            config={"kafka": {"commit_interval_ms": commit_interval_ms}},
        )

    def scored() -> int:
        return len(wait_count(kafka_broker.bootstrap, kafka_names.output, 10**9, timeout=0.5))

    def kill_while_scoring(victim):  # type: ignore[no-untyped-def]
        """SIGKILL once the output has grown since the last look: the victim is mid-stream."""
        before = scored()
        deadline = time.monotonic() + 20
        while scored() <= before and time.monotonic() < deadline:
            time.sleep(float(rng.uniform(0.1, 0.4)))
        victim.kill()

    a = daemon("edge-a").start()
    producer = replays(kafka_broker.bootstrap, kafka_names.input, csv, rate=150)
    plan: list[str] = []
    try:
        time.sleep(float(rng.uniform(1.5, 3.0)))
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        b = daemon("edge-b").start()  # a member joins
        plan.append("b joins")
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        time.sleep(float(rng.uniform(0.5, 1.5)))
        kafka_broker.kill()  # the broker dies mid-stream, and comes back
        kafka_broker.start()
        plan.append("kill broker")
        a.wait_ready(60)
        b.wait_ready(60)
        assert b.stop() == 0  # a member leaves
        plan.append("b leaves")
        kill_while_scoring(a)
        plan.append("kill a")
        a = daemon("edge-a").start()
        join_replay(producer)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.communicate()

    expected = len(offline)
    records = wait_count(kafka_broker.bootstrap, kafka_names.output, expected, timeout=150)
    for asset in ASSETS:  # 0 missing, 0 mismatched
        assert_matches_offline(records, offline[offline.asset == asset], asset=asset)
    live = {(r.json()["asset"], r.json()["ts"]) for r in records}
    assert len(live) == expected
    duplicates = len(records) - expected
    per_asset = {asset: sum(len(v) - 1 for v in by_ts(records, asset).values()) for asset in ASSETS}
    record_property("chaos_plan", ", ".join(plan))
    record_property("chaos_duplicates", duplicates)
    print(f"chaos: {expected} scores expected, {len(records)} published, {duplicates} duplicates {per_asset}")
    # At-least-once: only readings of uncommitted polls are scored twice (batch_size 20 each,
    # several partitions and restarts), nothing near the whole stream.
    assert duplicates < expected // 4
    assert a.proc is not None and a.proc.poll() is None, a.logs()[-3000:]
