"""The alarm rule (memae_ts.detection.alarms), tail probabilities and false-alarm budgets (tails):
the rule's semantics window by window, that it is stepwise (any batching gives the same alarms
and episodes), gaps, and on normal data that tail probabilities and budget thresholds mean
what they say."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from memae_ts.connectors.buffers import WindowBuffers

from memae_ts.detection.alarms import AlarmRule, AlarmState, apply_rule, episodes_frame
from memae_ts.detection.tails import EpisodeRate, TailModel, budget_threshold, count_episodes
from memae_ts.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def run_rule(values: list[float], rule: AlarmRule, starts: list[int] = ()) -> tuple[list[int], list]:
    x = np.asarray(values, dtype=np.float64)
    new = np.zeros(x.size, dtype=bool)
    new[list(starts)] = True
    state = AlarmState(rule)
    events = state.run(np.arange(x.size, dtype=np.float64), x, None, new)
    episodes = events.closed + ([state.episode] if state.episode is not None else [])
    return events.alarm.astype(int).tolist(), episodes


# -- the rule, window by window ----------------------------------------------------------------


def test_persistence_needs_k_of_the_last_n_windows():
    rule = AlarmRule(k=3, n=5, clear_level=1.0, min_windows=1)
    # Two windows above in any five never raise; the third within five does, at that window.
    alarm, episodes = run_rule([2, 0, 2, 0, 0, 0, 2, 0, 0, 2, 2, 0, 0, 0, 0, 0], rule)
    assert alarm == [0] * 10 + [1] + [0] * 5
    assert [(e.start, e.end, e.windows, e.end_reason) for e in episodes] == [(10, 10, 1, "cleared")]


def test_hysteresis_keeps_the_alarm_between_the_clear_and_the_raise_level():
    rule = AlarmRule(k=1, n=1, clear_level=0.5, min_windows=1)
    alarm, episodes = run_rule([0.9, 1.2, 0.8, 0.6, 0.51, 0.4, 0.9, 1.0], rule)
    assert alarm == [0, 1, 1, 1, 1, 0, 0, 1]  # 0.9 does not raise, but keeps a raised alarm on
    assert [(e.start, e.end, e.peak, e.peak_time) for e in episodes] == [(1, 4, 1.2, 1), (7, 7, 1.0, 7)]
    assert [e.end_reason for e in episodes] == ["cleared", "open"]


def test_a_raised_alarm_stays_on_for_the_minimum_duration():
    rule = AlarmRule(k=1, n=1, clear_level=1.0, min_windows=4)
    alarm, episodes = run_rule([2, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0], rule)
    # On for 4 windows from the raise (one episode despite the dip), then a new episode.
    assert alarm == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert [(e.start, e.windows, e.peak) for e in episodes] == [(0, 4, 2.0), (6, 4, 2.0)]


def test_raw_rule_is_the_per_window_threshold():
    x = np.random.default_rng(0).gamma(2.0, 0.4, 5000)
    alarm, _ = apply_rule(x, AlarmRule.raw())
    assert np.array_equal(alarm, x >= 1.0)


def test_a_gap_forgets_the_persistence_memory_and_closes_the_episode_with_gap():
    rule = AlarmRule(k=2, n=3, clear_level=1.0, min_windows=1)
    # One exceedance before the gap and one after it are not 2 of 3 windows of one stretch.
    alarm, episodes = run_rule([0, 0, 2, 2, 2, 0, 2, 0, 0], rule, starts=[0, 5])
    assert alarm == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert [(e.start, e.end, e.end_reason) for e in episodes] == [(3, 4, "gap")]


def test_rows_without_a_score_split_the_rows_into_stretches():
    x = np.array([0, 2, 2, np.nan, 2, 0, 2, 2, 2, 0], dtype=np.float64)
    alarm, episodes = apply_rule(x, AlarmRule(k=2, n=2, clear_level=1.0, min_windows=1))
    assert alarm.astype(int).tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 1, 0]
    assert [(e.start, e.end, e.end_reason) for e in episodes] == [(2, 2, "gap"), (7, 8, "cleared")]


def test_bad_rule_parameters_name_the_parameter():
    for bad, word in [
        (AlarmRule(k=4, n=3), "k must"),
        (AlarmRule(clear_level=1.5), "clear_level"),
        (AlarmRule(min_windows=0), "min_windows"),
        (AlarmRule(n=0), "n (windows"),
    ]:
        with pytest.raises(DataError, match=word.replace("(", r"\(")):
            bad.validate()


def test_the_rule_is_stepwise_any_batching_gives_the_same_alarms_and_episodes():
    """What makes the daemon (slices of a poll) agree with `memae-ts score` (a whole file)."""
    rng = np.random.default_rng(7)
    n = 6000
    x = rng.gamma(2.0, 0.3, n)
    for lo in rng.integers(0, n - 80, 25):  # faults of several lengths and levels
        x[lo : lo + rng.integers(3, 80)] += rng.uniform(0.3, 3.0)
    contributions = rng.random((n, 4)) * x[:, None]
    new = rng.random(n) < 0.003
    new[0] = True
    t = np.cumsum(rng.uniform(1, 2, n))
    rule = AlarmRule()

    whole = AlarmState(rule, "a", 4)
    ref = whole.run(t, x, contributions, new)
    ref_episodes = ref.closed + [whole.episode] * (whole.episode is not None)
    assert len(ref_episodes) > 10 and any(e.end_reason == "gap" for e in ref_episodes)

    for sizes in (1, 2, 7, 333):
        state = AlarmState(rule, "a", 4)
        alarm, closed, opened = [], [], []
        for lo in range(0, n, sizes):
            part = slice(lo, lo + sizes)
            events = state.run(t[part], x[part], contributions[part], new[part])
            alarm.append(events.alarm)
            closed += events.closed
            opened += events.opened
        episodes = closed + [state.episode] * (state.episode is not None)
        assert np.array_equal(np.concatenate(alarm), ref.alarm), sizes
        assert len(opened) == len(ref_episodes)
        for got, want in zip(episodes, ref_episodes, strict=True):
            assert (got.start, got.end, got.windows, got.peak, got.peak_time, got.end_reason) == (
                want.start, want.end, want.windows, want.peak, want.peak_time, want.end_reason,
            )  # fmt: skip
            np.testing.assert_allclose(got.contributions, want.contributions, rtol=1e-12)


def test_episode_top_sensors_are_shares_of_the_error_summed_over_the_episode():
    state = AlarmState(AlarmRule(k=1, n=1, clear_level=1.0, min_windows=1), "p", 3)
    c = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 9.0]])
    events = state.run(np.array([0.0, 60.0, 120.0]), np.array([2.0, 2.0, 0.0]), c, None)
    (episode,) = events.closed
    assert episode.top_sensors(["a", "b", "c"], 2) == [("b", 0.75), ("a", 0.25)]
    frame = episodes_frame([episode], ["a", "b", "c"], has_time=True)
    assert frame.loc[0, "start"] == "1970-01-01T00:00:00Z" and frame.loc[0, "duration_seconds"] == 60.0
    assert frame.loc[0, "top_sensors"] == "b:0.75;a:0.25;c:0.00"


def test_window_buffers_mark_the_first_window_of_every_stretch():
    """The live side of the gap rule: a time gap and a dropout longer than the fill limit."""
    buffers = WindowBuffers(3, 1, max_gap_seconds=90, max_fill_rows=1)
    ts = np.array([0, 60, 120, 180, 400, 460, 520, 580, 640, 700, 760, 820], dtype=np.float64)
    values = np.array([[1], [1], [1], [1], [1], [1], [1], [np.nan], [np.nan], [1], [1], [1]], float)
    made = buffers.extend("a", 0, ts, values, np.arange(len(ts)))
    assert made.ends.tolist() == [2, 3, 6, 7, 11]
    assert made.starts is not None and made.starts.tolist() == [True, False, True, False, True]
    # Row by row, the same flags.
    buffers = WindowBuffers(3, 1, max_gap_seconds=90, max_fill_rows=1)
    flags = []
    for i in range(len(ts)):
        one = buffers.extend("a", 0, ts[i : i + 1], values[i : i + 1], np.array([i]))
        flags += [] if one.starts is None else one.starts.tolist()
    assert flags == [True, False, True, False, True]


# -- tail probabilities and budgets on normal data ----------------------------------------------


def normal_scores(n: int, seed: int) -> np.ndarray:
    """Positive, autocorrelated, heavy-ish tailed: what window scores of normal operation look
    like (neighbouring windows share readings)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n + 200)
    z = np.convolve(e, np.full(20, 1 / np.sqrt(20)), mode="valid")[:n]
    return np.exp(0.5 * z) * rng.gamma(8.0, 1 / 8.0, n)


def test_tail_probability_is_monotone_and_calibrated_on_fresh_normal_data():
    calibration = normal_scores(30_000, 1)
    fresh = normal_scores(300_000, 2)
    stretch = np.zeros(calibration.size, dtype=bool)
    stretch[0] = True
    tail = TailModel.fit(calibration, stretch, run=20)
    assert tail.method == "gpd" and tail.clusters >= 10
    grid = np.linspace(0, fresh.max() * 3, 20_000)
    p = tail.tail_probability(grid)
    assert np.all(np.diff(p) <= 0) and np.all(p > 0) and p[0] == 1.0
    assert np.isnan(tail.tail_probability(np.array([np.nan]))[0])
    # The share of fresh normal windows at or above a level is what the model says, within
    # the sampling error of a dependent series (a factor of 2 in the far tail).
    for q in (0.5, 0.9, 0.99, 0.999, 0.9999):
        level = np.quantile(fresh, q)
        said = float(tail.tail_probability(np.array([level]))[0])
        assert said == pytest.approx(1 - q, rel=0.5 if q < 0.999 else 1.0), q
    # Stored in a bundle and read back: the same numbers (numpy only on the gateway).
    again = TailModel.from_config(json.loads(json.dumps(tail.to_config())))
    assert again is not None
    assert np.array_equal(again.tail_probability(grid), p)


def test_a_malformed_stored_tail_model_is_refused():
    tail = TailModel.fit(normal_scores(5000, 3), np.eye(1, 5000, dtype=bool)[0], run=20).to_config()
    bad = {**tail, "survival": list(reversed(tail["survival"]))}
    with pytest.raises(DataError, match="tail model is malformed"):
        TailModel.from_config(bad)


@pytest.mark.parametrize("per_1000", [2.0, 0.2])
def test_budget_threshold_gives_about_the_budget_on_fresh_normal_data(per_1000: float):
    """2 per 1000 windows is counted on the slice; 0.2 is rarer than the slice shows often
    enough (fewer than 5 episodes in 20 000 windows): declustered POT extrapolates."""
    rule = AlarmRule()
    calibration = normal_scores(20_000, 4)
    fresh = normal_scores(400_000, 5)
    first = np.zeros(calibration.size, dtype=bool)
    first[0] = True
    rate = EpisodeRate.fit(calibration, first, rule, seconds_per_window=60.0)
    threshold, how = budget_threshold(rate, per_1000 / 1000)
    assert how == ("counted" if per_1000 == 2.0 else "gpd")
    fresh_first = np.zeros(fresh.size, dtype=bool)
    fresh_first[0] = True
    realised = count_episodes(fresh, fresh_first, rule, threshold) / fresh.size * 1000
    assert realised == pytest.approx(per_1000, rel=0.6), (realised, per_1000)
    report = rate.report(threshold)
    assert report["estimated_by"] == how
    assert report["episodes_per_1000_windows"] == pytest.approx(per_1000, rel=0.05)
    assert report["episodes_per_day"] == pytest.approx(per_1000 * 1.44, rel=0.05)  # 1440 windows a day


# -- the API and CLI on a real model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A small model whose threshold comes from a budget of 1 false alarm per 1000 windows, on
    three days of normal demo data (minute sampling)."""
    pytest.importorskip("torch")
    from memae_ts.estimator import MemAE
    from memae_ts.io.demo_data import generate

    history = generate(days=3, seed=21, faults=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MemAE(
            window=16, channels=(8, 16), latent=8, memory_slots=20, epochs=4, seed=0,
            false_alarms_per_1000_windows=1.0,
        ).fit(history)  # fmt: skip
    out = tmp_path_factory.mktemp("budget") / "model"
    model.save(out)
    return model, out


def test_budget_model_api_reports_the_budget_and_stays_near_it_on_fresh_normal_days(budget_model):
    from memae_ts.io.demo_data import generate

    model, _ = budget_model
    threshold = model.bundle_.config["threshold"]
    assert threshold["method"] == "budget" and threshold["budget_unit"] == "per 1000 windows"
    assert threshold["calibration_slice"] == "held out from training and early stopping"
    assert model.bundle_.config["alarm"] == AlarmRule().to_config()
    fresh = generate(days=6, seed=22, faults=False)
    episodes = model.episodes(fresh)
    windows = int(np.isfinite(model.score_samples(fresh)).sum())
    realised = len(episodes) / windows * 1000
    # 1 per 1000 windows: about 8.6 on these 8600 windows; a short calibration slice (0.3 days)
    # and a fresh week that wanders further than the training days: within a factor of 4.
    assert realised <= 4.0, (realised, episodes)
    tail = model.tail_probability(fresh)
    scores = model.score_samples(fresh)
    ok = np.isfinite(scores)
    order = np.argsort(scores[ok])
    assert np.all(np.diff(tail[ok][order]) <= 0)  # monotone in the score
    assert 0.2 < float(np.mean(tail[ok] <= 0.5)) < 0.8  # half of normal windows below the median


def test_episodes_on_two_machines_with_gaps_and_missing_values(budget_model):
    """Messy data: two machines, a time gap inside a fault, missing values (short ones filled,
    a long one breaking the series); episodes never cross machines or gaps."""
    from memae_ts.io.demo_data import generate

    model, _ = budget_model
    a = generate(days=1, seed=5).assign(machine="pump-a")
    b = generate(days=1, seed=6).assign(machine="pump-b")
    # 15 minutes without data in the middle of pump-b's longest alarm episode.
    alone = model.episodes(b.drop(columns=["anomaly"]))
    longest = alone.loc[alone.windows.idxmax()]
    times = pd.to_datetime(b.timestamp)
    inside = np.flatnonzero((times >= pd.Timestamp(longest.start)) & (times <= pd.Timestamp(longest.end)))
    assert inside.size > 40
    middle = int(inside[inside.size // 2])
    b = b.drop(index=range(middle, middle + 15))
    a.loc[100:101, "flow_m3h"] = np.nan  # filled
    a.loc[400:420, "bearing_temp_c"] = np.nan  # too long: the series breaks
    frame = pd.concat([a, b]).sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame = frame.drop(columns=["anomaly"])
    model.asset_column = "machine"
    try:
        episodes = model.episodes(frame)
        alarms = model.alarms(frame)
    finally:
        model.asset_column = None
    assert set(episodes.asset) == {"pump-a", "pump-b"}
    gap_end = pd.Timestamp(b.timestamp.iloc[middle - 1])
    gap_ended = episodes[(episodes.asset == "pump-b") & (episodes.end_reason == "gap")]
    assert (pd.to_datetime(gap_ended.end) == gap_end).any(), episodes
    for machine, rows in frame.groupby("machine"):
        times = pd.to_datetime(rows.timestamp)
        mine = episodes[episodes.asset == machine]
        assert (pd.to_datetime(mine.start) >= times.min()).all()
        assert (pd.to_datetime(mine.end) <= times.max()).all()
        assert int(alarms[rows.index].sum()) == int(mine.windows.sum())
    assert (episodes.windows >= AlarmRule().min_windows).all() or (episodes.end_reason != "cleared").any()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "memae_ts.cli", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def test_cli_score_episodes_rule_overrides_and_info(budget_model, tmp_path):
    from memae_ts.io.demo_data import generate

    _, bundle = budget_model
    live = tmp_path / "live.csv"
    generate(days=1, seed=5).to_csv(live, index=False)
    scores, episodes = tmp_path / "s.csv", tmp_path / "e.csv"
    done = cli("score", str(bundle), str(live), "-o", str(scores), "--episodes", str(episodes))
    assert done.returncode == 0, done.stderr
    table, eps = pd.read_csv(scores), pd.read_csv(episodes)
    assert {"alarm", "tail_probability"} <= set(table.columns)
    assert len(eps) >= 1 and int(table.alarm.sum()) == int(eps.windows.sum())
    assert f"{len(eps)} episode(s)" in done.stderr
    raw = cli("score", str(bundle), str(live), "--raw-alarms", "-o", str(scores))
    assert raw.returncode == 0
    assert np.array_equal(pd.read_csv(scores).alarm.to_numpy(), pd.read_csv(scores).is_anomaly.to_numpy())
    bad = cli("score", str(bundle), str(live), "--persistence", "7/5")
    assert bad.returncode == 2 and "k must be an integer in 1..n (5), got 7" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    info = cli("info", str(bundle))
    assert "alarm rule     3 of 5 windows >= 1 raise" in info.stdout
    assert "budget         1 false alarm(s) per 1000 windows" in info.stdout
    assert "expected on normal operation" in info.stdout and "tail prob." in info.stdout


def test_a_bundle_from_before_the_alarm_rule_gets_the_documented_defaults(budget_model, tmp_path):
    from runtime_bundles import restamp

    from memae_ts.estimator import load

    _, bundle = budget_model
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "model.safetensors"):
        (old / name).write_bytes((bundle / name).read_bytes())
    config = json.loads((old / "config.json").read_text())
    for key in ("alarm", "tail"):
        config.pop(key)
    config["threshold"].pop("expected")
    (old / "config.json").write_text(json.dumps(config))
    restamp(old)
    model = load(old)
    assert model.alarm_rule_ == AlarmRule() and model.tail_ is None
    info = cli("info", str(old))
    assert "(none stored: a bundle older than the rule gets the defaults)" in info.stdout
    assert "tail prob.     none" in info.stdout
    with pytest.raises(Exception, match="no tail model"):
        model.tail_probability(np.zeros((40, len(model.sensors_))))
