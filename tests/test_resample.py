"""Offline resampling: the grid, hold and interpolate rules on hand-made cases, the stats, the
spec's config round trip, and the vectorised code against a plain loop over grid points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memae_ts.io import resample
from memae_ts.io.resample import ResampleSpec, default_limit, resample_series

S = 1_000_000_000  # ns per second
nan = math.nan


def series(times_s: list[float], *rows: list[float]) -> tuple[np.ndarray, np.ndarray]:
    times = np.array([round(t * S) for t in times_s], dtype=np.int64)
    return times, np.array(rows, dtype=np.float64).reshape(len(times_s), -1)


# -- the spec ---------------------------------------------------------------------------------


def test_default_limit_is_an_hour_or_three_periods():
    assert default_limit(10) == 3600.0
    assert default_limit(3600) == 10800.0
    assert ResampleSpec(10).limit() == 3600.0
    assert ResampleSpec(10, limit_seconds=30).limit() == 30.0


def test_config_round_trip_writes_the_effective_limit():
    spec = ResampleSpec(2.5, "interpolate")
    config = spec.to_config()
    assert config == {"period_seconds": 2.5, "method": "interpolate", "limit_seconds": 3600.0}
    again = ResampleSpec.from_config(config)
    assert again == ResampleSpec(2.5, "interpolate", 3600.0)
    assert again.to_config() == config


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"method": "hold"}, "period_seconds"),
        ({"period_seconds": "10s"}, "period_seconds"),
        ({"period_seconds": 0}, "period_seconds"),
        ({"period_seconds": -1.0}, "period_seconds"),
        ({"period_seconds": True}, "period_seconds"),
        ({"period_seconds": float("nan")}, "period_seconds"),
        ({"period_seconds": 1e-10}, "period_seconds"),
        ({"period_seconds": 10, "method": "mean"}, "method"),
        ({"period_seconds": 10, "method": 1}, "method"),
        ({"period_seconds": 10, "limit_seconds": -5}, "limit_seconds"),
        ({"period_seconds": 10, "limit_seconds": "1h"}, "limit_seconds"),
        ({"period_seconds": 10, "origin": 0}, "origin"),
    ],
)
def test_from_config_names_the_bad_field(config, field):
    with pytest.raises(ValueError, match=field):
        ResampleSpec.from_config(config)


def test_from_config_refuses_a_non_object():
    with pytest.raises(ValueError, match="object"):
        ResampleSpec.from_config([10])  # type: ignore[arg-type]


def test_describe():
    assert ResampleSpec(10).describe() == "every 10 s, last value held up to 1 h"
    assert ResampleSpec(600, "interpolate", 5400).describe() == (
        "every 10 min, linear between readings up to 90 min apart"
    )
    assert ResampleSpec(0.5, limit_seconds=90).describe() == "every 0.5 s, last value held up to 90 s"


# -- the grid and hold ------------------------------------------------------------------------


def test_grid_is_made_of_epoch_multiples_inside_the_readings():
    times, values = series([13, 27, 41], [1], [2], [3])
    grid, out, source, stats = resample_series(times, values, ResampleSpec(10))
    np.testing.assert_array_equal(grid, np.array([20, 30, 40]) * S)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 2])
    np.testing.assert_array_equal(source, [0, 1, 1])
    assert stats.input_rows == 3 and stats.grid_rows == 3


def test_a_fractional_period_uses_integer_nanoseconds():
    times, values = series([0.05, 0.31, 0.52], [1], [2], [3])
    grid, out, _, _ = resample_series(times, values, ResampleSpec(0.1))
    np.testing.assert_array_equal(grid, [100_000_000, 200_000_000, 300_000_000, 400_000_000, 500_000_000])
    np.testing.assert_array_equal(out[:, 0], [1, 1, 1, 2, 2])


def test_no_grid_point_inside_the_readings_gives_an_empty_table():
    times, values = series([11, 19], [1, 2], [3, 4])
    grid, out, source, stats = resample_series(times, values, ResampleSpec(10))
    assert grid.shape == (0,) and out.shape == (0, 2) and source.shape == (0,)
    assert stats.readings_between == 2  # neither reached the grid
    grid, out, _, _ = resample_series(np.empty(0, np.int64), np.empty((0, 2)), ResampleSpec(10))
    assert grid.shape == (0,) and out.shape == (0, 2)


def test_hold_carries_each_sensor_separately_and_nan_continues_the_hold():
    times, values = series([0, 10, 25], [1, 10], [nan, 11], [2, nan])
    _, out, _, stats = resample_series(times, values, ResampleSpec(5))
    np.testing.assert_array_equal(out, [[1, 10], [1, 10], [1, 11], [1, 11], [1, 11], [2, 11]])
    np.testing.assert_array_equal(stats.exact_cells, [2, 2])
    np.testing.assert_array_equal(stats.held_cells, [4, 4])
    np.testing.assert_array_equal(stats.missing_cells, [0, 0])


def test_hold_stops_at_the_limit_and_a_missing_first_value_stays_missing():
    times, values = series([0, 10, 50], [1, nan], [nan, 7], [3, 8])
    _, out, _, stats = resample_series(times, values, ResampleSpec(10, limit_seconds=20))
    # sensor 0: 1 held to 20 s (age 20 = limit), NaN at 30 and 40; sensor 1 unknown at 0
    np.testing.assert_array_equal(out, [[1, nan], [1, 7], [1, 7], [nan, 7], [nan, nan], [3, 8]])
    np.testing.assert_array_equal(stats.missing_cells, [2, 2])


def test_a_marker_makes_the_value_unknown_until_the_next_valid_reading():
    times, values = series([0, 12, 31], [1, 5], [99, 6], [2, nan])
    invalid = np.array([[False, False], [True, False], [False, False]])
    _, out, _, stats = resample_series(times, values, ResampleSpec(10), invalid)
    np.testing.assert_array_equal(out, [[1, 5], [1, 5], [nan, 6], [nan, 6]])
    np.testing.assert_array_equal(stats.missing_cells, [2, 0])
    assert not (out == 99).any()  # a marker's number is never used


def test_readings_between_counts_rows_whose_values_no_grid_cell_took():
    # 10 s grid: 3 and 6 lie behind 8 before the grid point 10; 12 and 14 come after the
    # last grid point: no cell took any of these four
    times, values = series([0, 3, 6, 8, 12, 14], [0, 0], [1, 1], [2, 2], [3, 3], [nan, 4], [5, 5])
    _, out, _, stats = resample_series(times, values, ResampleSpec(10))
    np.testing.assert_array_equal(out, [[0, 0], [3, 3]])
    assert stats.readings_between == 4
    # a row whose valid value is held because later rows left that sensor empty is not counted
    times, values = series([0, 3, 4, 5], [0, 0], [1, 1], [nan, 2], [nan, nan])
    _, out, _, stats = resample_series(times, values, ResampleSpec(5))
    np.testing.assert_array_equal(out, [[0, 0], [1, 2]])
    assert stats.readings_between == 0


def test_bad_inputs_are_refused():
    times, values = series([0, 10], [1], [2])
    with pytest.raises(ValueError, match="strictly increasing"):
        resample_series(times[::-1].copy(), values, ResampleSpec(5))
    with pytest.raises(ValueError, match="int64"):
        resample_series(times.astype(np.float64), values, ResampleSpec(5))
    with pytest.raises(ValueError, match="shape"):
        resample_series(times, values[:1], ResampleSpec(5))


# -- interpolate ------------------------------------------------------------------------------


def test_interpolate_is_linear_between_a_sensors_own_readings():
    times, values = series([0, 4, 20], [0, 100], [nan, 104], [20, nan])
    grid, out, _, stats = resample_series(times, values, ResampleSpec(5, "interpolate"))
    np.testing.assert_array_equal(grid, np.array([0, 5, 10, 15, 20]) * S)
    np.testing.assert_allclose(out[:, 0], [0, 5, 10, 15, 20], rtol=0, atol=1e-12)
    # sensor 1 has no reading at or after 5 s: unknown there, exact at 0
    np.testing.assert_array_equal(out[:, 1], [100, nan, nan, nan, nan])
    np.testing.assert_array_equal(stats.exact_cells, [2, 1])
    np.testing.assert_array_equal(stats.held_cells, [3, 0])


def test_interpolate_needs_both_readings_within_the_limit_and_no_marker_between():
    times, values = series([0, 30, 35, 40, 100], [0], [nan], [7], [10], [99])
    invalid = np.array([[False], [True], [False], [False], [False]])
    _, out, _, _ = resample_series(times, values, ResampleSpec(10, "interpolate", 40), invalid)
    # 10, 20: between 0 and 35 with a marker at 30 -> NaN; 30: same; 40: exact;
    # 50..90: 40 and 100 are 60 s apart > 40 -> NaN; 100: exact
    np.testing.assert_array_equal(out[:, 0], [0, nan, nan, nan, 10, nan, nan, nan, nan, nan, 99])


# -- against a plain loop ---------------------------------------------------------------------


def reference(times, values, invalid, spec):
    """Per grid point and sensor, straight from the module docstring."""
    p, limit = spec.period_ns(), spec.limit_ns()
    first = -(-int(times[0]) // p) * p
    grid = list(range(first, int(times[-1]) + 1, p))
    out = np.full((len(grid), values.shape[1]), nan)
    for gi, g in enumerate(grid):
        for j in range(values.shape[1]):
            valid = [i for i in range(len(times)) if not math.isnan(values[i, j]) and not invalid[i, j]]
            marks = [int(times[i]) for i in range(len(times)) if invalid[i, j]]
            before = [i for i in valid if times[i] <= g]
            after = [i for i in valid if times[i] >= g]
            if not before:
                continue
            a = before[-1]
            ta = int(times[a])
            if spec.method == "hold":
                if g - ta <= limit and not any(ta < m <= g for m in marks):
                    out[gi, j] = values[a, j]
                continue
            if not after:
                continue
            b = after[0]
            tb = int(times[b])
            if tb - ta > limit or any(ta < m < tb for m in marks):
                continue
            if ta == tb:
                out[gi, j] = values[a, j]
            else:
                out[gi, j] = values[a, j] + (values[b, j] - values[a, j]) * ((g - ta) / (tb - ta))
    return np.array(grid, dtype=np.int64), out


@pytest.mark.parametrize("method", ["hold", "interpolate"])
@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_the_plain_loop(method, seed, monkeypatch):
    if seed % 2:  # one sensor per block, as for files too long for all sensors at once
        monkeypatch.setattr(resample, "BLOCK_CELLS", 1)
    rng = np.random.default_rng(seed)
    n, s = 60, 3
    steps = rng.choice([1, 7, 13, 250, 900], size=n, p=[0.3, 0.3, 0.3, 0.05, 0.05]) * S // 2
    steps += rng.integers(0, 1000, n)  # nanosecond jitter
    times = np.cumsum(steps).astype(np.int64) + rng.integers(-(10**12), 10**12)
    values = rng.normal(size=(n, s)).round(3)
    values[rng.random((n, s)) < 0.4] = nan
    invalid = rng.random((n, s)) < 0.05
    spec = ResampleSpec(float(rng.choice([2.5, 5.0, 10.0])), method, float(rng.choice([20, 200, 600])))
    grid, out, source, stats = resample_series(times, values, spec, invalid)
    ref_grid, ref = reference(times, values, invalid, spec)
    np.testing.assert_array_equal(grid, ref_grid)
    np.testing.assert_array_equal(out, ref)  # the same formula: the same bits
    np.testing.assert_array_equal(times[source] <= grid, True)
    np.testing.assert_array_equal(np.append(times, np.iinfo(np.int64).max)[source + 1] > grid, True)
    known = ~np.isnan(out)
    np.testing.assert_array_equal(stats.missing_cells, (~known).sum(axis=0))
    np.testing.assert_array_equal(stats.exact_cells + stats.held_cells, known.sum(axis=0))
