"""The SKAB changepoint (NAB) score of memae_ts.evaluation.nab on series whose score is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memae_ts.evaluation.nab import PROFILES, events_of, nab, raw_scores

TIMES = np.arange(200, dtype=np.float64)  # one row a second
CHANGEPOINTS = np.isin(np.arange(200), [50, 120]).astype(np.int64)  # windows [35, 65], [105, 135]


def alarms_on(*spans: tuple[int, int]) -> np.ndarray:
    out = np.zeros(200, dtype=bool)
    for start, stop in spans:
        out[start:stop] = True
    return out


def test_alarm_switching_at_each_window_start_is_perfect() -> None:
    series = events_of(TIMES, CHANGEPOINTS, alarms_on((35, 105)))  # on at 35, off at 105
    assert series.windows == [(35.0, 65.0), (105.0, 135.0)]
    assert series.events.tolist() == [35.0, 105.0]
    assert nab([series]) == pytest.approx({name: 100.0 for name in PROFILES})


def test_no_alarm_scores_zero_and_every_switch_outside_a_window_costs_a_fp() -> None:
    assert nab([events_of(TIMES, CHANGEPOINTS, alarms_on())]) == pytest.approx({n: 0.0 for n in PROFILES})
    # Perfect hits plus one extra alarm at 150..159: two more events, both outside the windows.
    series = events_of(TIMES, CHANGEPOINTS, alarms_on((35, 105), (150, 160)))
    for name, (a_tp, a_fp, a_fn) in PROFILES.items():
        expected = 100 * (2 * a_tp + 2 * a_fp - 2 * a_fn) / (2 * a_tp - 2 * a_fn)
        assert nab([series])[name] == pytest.approx(expected), name


def test_credit_falls_from_a_tp_to_a_fp_across_the_window() -> None:
    a_tp, a_fp, a_fn = PROFILES["standard"]
    # Only the first event in a window counts; later ones inside it are free.
    early = events_of(TIMES, CHANGEPOINTS, alarms_on((35, 40)))  # events 35 and 40, both in window 1
    assert raw_scores(early, PROFILES["standard"]) == pytest.approx((a_tp + a_fn, 2 * a_fn, 2 * a_tp))
    middle = events_of(TIMES, CHANGEPOINTS, alarms_on((50, 105)))  # 50 = centre of [35, 65]
    score, _, _ = raw_scores(middle, PROFILES["standard"])
    # Step 500 of SKAB's 1000-point curve sits just right of the centre: slightly below the mean.
    x = -math.pi / 2 + math.pi * 500 / 999
    centre = -(a_tp - a_fp) / 2 * math.tanh(x) / math.tanh(math.pi / 2) + (a_tp - a_fp) / 2 + a_fp
    assert score == pytest.approx(centre + a_tp)
    assert centre == pytest.approx((a_tp + a_fp) / 2, abs=1e-3)
    late = events_of(TIMES, CHANGEPOINTS, alarms_on((65, 105)))  # 65 = end of window 1
    assert raw_scores(late, PROFILES["standard"])[0] == pytest.approx(a_fp + a_tp, abs=1e-3)


def test_overlapping_windows_are_cut_and_a_first_row_alarm_is_an_event() -> None:
    changepoints = np.isin(np.arange(200), [50, 60]).astype(np.int64)
    series = events_of(TIMES, changepoints, alarms_on((0, 10)))
    assert series.windows == [(35.0, 65.0), (65.0, 75.0)]  # the later one starts where the earlier ends
    assert series.events.tolist() == [0.0, 10.0]
    _, a_fp, a_fn = PROFILES["standard"]
    assert raw_scores(series, PROFILES["standard"])[0] == pytest.approx(2 * a_fp + 2 * a_fn)


def test_scores_pool_over_series_before_normalising() -> None:
    perfect = events_of(TIMES, CHANGEPOINTS, alarms_on((35, 105)))
    silent = events_of(TIMES, CHANGEPOINTS, alarms_on())
    assert nab([perfect, silent])["standard"] == pytest.approx(50.0)
    assert math.isnan(nab([events_of(TIMES, np.zeros(200), alarms_on((1, 3)))])["standard"])


def test_a_zero_width_window_still_scores() -> None:
    series = events_of(np.arange(5.0), np.array([0, 0, 1, 0, 0]), np.array([0, 0, 1, 1, 0]), 0.0)
    assert series.windows == [(2.0, 2.0)]
    a_tp, a_fp, _ = PROFILES["standard"]
    assert raw_scores(series, PROFILES["standard"])[0] == pytest.approx(a_tp + a_fp)  # hit, then off at 4
