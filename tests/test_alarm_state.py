"""The alarm rule's state as a snapshot (memae_ts.detection.alarms.AlarmState.snapshot/restore):
a rule resumed from a snapshot, after a JSON round trip, gives exactly the alarms and episodes of
one that ran through; a snapshot it cannot use is refused with a reason, never half taken."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pytest

from memae_ts.detection.alarms import AlarmRule, AlarmState, AlarmStateError, Episode

N_SENSORS = 4


def messy_scores(seed: int, m: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One asset's windows: quiet stretches, faults hovering around the threshold (so the
    deadband and the minimum duration matter), NaN scores, irregular times and gaps."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.choice([60.0, 60.0, 60.0, 120.0, 3600.0], size=m, p=[0.6, 0.2, 0.1, 0.07, 0.03]))
    level = rng.gamma(2.0, 0.25, size=m)
    for start in rng.integers(0, m - 40, size=6):
        level[start : start + rng.integers(5, 40)] += rng.uniform(0.5, 3.0)
    level[rng.random(m) < 0.03] = np.nan
    level[rng.random(m) < 0.01] = np.inf
    contributions = rng.gamma(1.0, 1.0, size=(m, N_SENSORS))
    contributions[rng.random((m, N_SENSORS)) < 0.02] = np.nan
    starts = np.diff(times, prepend=-np.inf) > 600.0  # a new stretch after a gap
    return times, level, contributions, starts


def episode_fields(e: Episode) -> tuple:
    return (e.asset, e.start, e.end, e.peak, e.peak_time, e.windows, e.end_reason, e.contributions.tolist())


def run(state: AlarmState, data: tuple, lo: int, hi: int) -> tuple[np.ndarray, list, list]:
    times, level, contributions, starts = data
    events = state.run(times[lo:hi], level[lo:hi], contributions[lo:hi], starts[lo:hi])
    # An opened episode is still growing (the object is shared with the state): its identity.
    opened = [(e.asset, e.start) for e in events.opened]
    return events.alarm, opened, [episode_fields(e) for e in events.closed]


@pytest.mark.parametrize("rule", [AlarmRule(), AlarmRule(k=2, n=4, clear_level=0.7, min_windows=8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resumed_from_snapshot_equals_ran_through(rule: AlarmRule, seed: int) -> None:
    """Three assets, each cut at many points (inside episodes, at gaps, in the persistence
    window): every cut is a "restart" from a JSON snapshot; alarms, opened and closed episodes
    (every field, floats bit for bit) and the state left open at the end are the same."""
    checked_open = 0
    for asset in ("pump-a", "pump-b", "fan 3"):
        data = messy_scores(seed * 10 + len(asset))
        m = len(data[0])
        rng = np.random.default_rng(seed)
        cuts = sorted({0, m, *rng.integers(1, m, size=25).tolist()})
        # The same batches without a restart (episode sums are added batch by batch, so the
        # last bits of a float depend on where batches end, restart or not).
        through = AlarmState(rule, asset, N_SENSORS)
        want_alarm, want_opened, want_closed = [], [], []
        for lo, hi in itertools.pairwise(cuts):
            alarm, opened, closed = run(through, data, lo, hi)
            want_alarm.append(alarm)
            want_opened += opened
            want_closed += closed
        assert want_opened and want_closed  # the data does exercise episodes
        np.testing.assert_array_equal(np.concatenate(want_alarm), run(AlarmState(rule), data, 0, m)[0])

        state = AlarmState(rule, asset, N_SENSORS)
        got_alarm, got_opened, got_closed = [], [], []
        for lo, hi in itertools.pairwise(cuts):
            blob = orjson.dumps(state.snapshot())
            state = AlarmState(rule, asset, N_SENSORS)
            state.restore(orjson.loads(blob))
            checked_open += state.episode is not None
            alarm, opened, closed = run(state, data, lo, hi)
            got_alarm.append(alarm)
            got_opened += opened
            got_closed += closed
        np.testing.assert_array_equal(np.concatenate(got_alarm), np.concatenate(want_alarm))
        assert got_opened == want_opened
        assert got_closed == want_closed
        assert state.snapshot() == through.snapshot()
    assert checked_open > 0  # some cuts fell inside an open episode


def test_snapshot_is_small_and_plain_json() -> None:
    state = AlarmState(AlarmRule(), "pump-a", N_SENSORS)
    data = messy_scores(3)
    state.run(*data)
    blob = orjson.dumps(state.snapshot())
    assert len(blob) < 600
    assert orjson.loads(blob)["v"] == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(v=2), "version"),
        (lambda d: d["rule"].update(k=2), "rule"),
        (lambda d: d.update(n_sensors=5), "sensors"),
        (lambda d: d.update({"raise": "0121"}), "malformed"),
        (lambda d: d.update({"raise": "0" * 9}), "malformed"),
        (lambda d: d.pop("episode"), "malformed"),
        (lambda d: d.update(active=False), "malformed"),  # an open episode with the alarm off
        (lambda d: d["episode"].update(contributions=[1.0]), "malformed"),
        (lambda d: d["episode"].update(peak=None), "malformed"),
    ],
)
def test_unusable_snapshot_is_refused_with_a_reason(change, reason: str) -> None:
    rule = AlarmRule()
    state = AlarmState(rule, "pump-a", N_SENSORS)
    state.run(np.arange(8.0), np.full(8, 2.0), np.ones((8, N_SENSORS)))
    assert state.active and state.episode is not None
    data = orjson.loads(orjson.dumps(state.snapshot()))
    change(data)
    fresh = AlarmState(rule, "pump-a", N_SENSORS)
    with pytest.raises(AlarmStateError) as info:
        fresh.restore(data)
    assert info.value.reason == reason
    assert fresh.snapshot() == AlarmState(rule, "pump-a", N_SENSORS).snapshot()  # untouched
    with pytest.raises(AlarmStateError):
        fresh.restore(b"not a dict")
