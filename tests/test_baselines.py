"""Baselines in the model's harness (memae_ts.evaluation.baselines), scoring choices
(memae_ts.detection.score_reduction) and the benchmark's file-level bootstrap (bench/bootstrap.py).

The control limits are checked against what they promise on data drawn from a known
distribution (1 % of normal rows beyond a 99 % limit), not against a copy of the formula.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.detection.score_reduction import Reduction, last_rows_weights
from memae_ts.errors import DataError
from memae_ts.evaluation.baselines import IForestBaseline, PCABaseline, make_baseline
from memae_ts.io.data import DataWarning

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENSORS = [f"s{i}" for i in range(8)]


def correlated_plant(n: int, seed: int, fault: tuple[int, int, int, float] | None = None) -> pd.DataFrame:
    """Eight sensors driven by three latent factors plus noise, 60 s sampling, with the mess
    of a real export: a 20-minute logger outage, a few missing cells, two bad rows of text.
    `fault` = (start, stop, sensor, offset) shifts one sensor off the correlation structure."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    loadings = np.random.default_rng(99).normal(size=(3, 8))  # the plant: the same for every file
    values = 50.0 + 3.0 * factors @ loadings + rng.normal(0, 0.5, size=(n, 8))
    label = np.zeros(n, dtype=int)
    if fault is not None:
        start, stop, sensor, offset = fault
        values[start:stop, sensor] += offset
        label[start:stop] = 1
    times = pd.date_range("2026-11-01", periods=n, freq="60s").to_series()
    times.iloc[n // 3 :] += pd.Timedelta(minutes=20)  # outage: the series splits there
    frame = pd.DataFrame(values.round(3), columns=SENSORS)
    frame.insert(0, "timestamp", times.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy())
    frame = frame.astype({name: object for name in SENSORS})
    for row, col in zip(rng.integers(0, n, 6), rng.integers(0, 8, 6), strict=True):
        frame.iat[int(row), 1 + int(col)] = np.nan
    frame.iat[n // 2, 3] = "Bad"
    frame["anomaly"] = label
    return frame


PARAMS = {"window": 8, "label_column": "anomaly"}


def marked() -> pytest.WarningsRecorder:
    """Every read of `correlated_plant` reports its 'Bad' marker (never silently dropped)."""
    return pytest.warns(DataWarning, match="quality markers read as missing values.*'Bad' 1")


def test_pca_limits_hold_their_confidence_on_new_normal_data_and_q_catches_a_broken_correlation() -> None:
    with marked():
        model = PCABaseline(PARAMS).fit(correlated_plant(2000, seed=1))
    assert model.n_components_ == 3  # three factors explain > 90 % here
    assert model.threshold_ == 1.0
    test = correlated_plant(4000, seed=2)
    with marked():
        data, result = model.score_rows(test.drop(columns="anomaly"))
    scored = np.isfinite(result.score)
    assert scored.sum() > 3900
    # T² and Q limits at 99 %: about 1 % of new normal rows beyond each (F and Jackson–Mudholkar).
    from memae_ts.io.windows import gather, segment, window_ends

    segments = segment(data, max_gap_seconds=model.max_gap_, max_fill_rows=model.max_fill_)
    ends = window_ends(segments, model.window_, 1)
    t2, q, _ = model.statistics(gather(segments.values, ends, model.window_))
    assert 0.004 < np.mean(t2 > model.t2_limit_) < 0.02
    assert 0.004 < np.mean(q > model.q_limit_) < 0.02

    # A sensor that leaves the correlation structure by 16 noise σ (0.3 of its spread): Q sees it,
    # and the top contribution names the sensor.
    faulty = correlated_plant(1500, seed=3, fault=(1000, 1200, 5, 8.0))
    with marked():
        data, result = model.score_rows(faulty.drop(columns="anomaly"))
    inside = np.zeros(len(data), dtype=bool)
    inside[1000:1200] = True
    detected = np.nan_to_num(result.normalised[inside]) >= 1.0
    assert detected.mean() > 0.9
    assert np.mean(np.argmax(result.contributions[inside], axis=1) == 5) > 0.9
    assert np.mean(np.nan_to_num(result.normalised[~inside]) >= 1.0) < 0.04


def test_iforest_threshold_is_the_held_out_quantile_and_it_ranks_a_burst_above_normal() -> None:
    pytest.importorskip("sklearn")
    train = correlated_plant(1500, seed=4)
    with marked():
        model = IForestBaseline(PARAMS, seed=0, n_estimators=50).fit(train)
    assert model.calibration_["method"] == "quantile" and "margin" not in model.calibration_
    assert model.calibration_["n_scores"] == model.n_val_windows_
    faulty = correlated_plant(1000, seed=5, fault=(600, 700, 2, 15.0))
    with marked():
        scores = model.score_samples(faulty.drop(columns="anomaly"))
    from memae_ts.evaluation.metrics import roc_auc

    scored = np.isfinite(scores)
    assert roc_auc(faulty["anomaly"].to_numpy()[scored], scores[scored]) > 0.9
    # Same seed, same forest: the benchmark's seeds mean something.
    with marked():
        again_model = IForestBaseline(PARAMS, seed=0, n_estimators=50).fit(train)
    with marked():
        again = again_model.score_samples(faulty.drop(columns="anomaly"))
    np.testing.assert_array_equal(scores, again)


def test_baselines_from_a_bundle_score_exactly_the_rows_the_model_scores(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    from memae_ts.estimator import load

    model = load(tiny_model_dir, engine="numpy")
    history, live = plant_csvs
    reference = model.score_samples(live)
    for kind in ("pca", "iforest"):
        if kind == "iforest":
            pytest.importorskip("sklearn")
        baseline = make_baseline(kind, source=model.bundle_).fit(history)
        assert baseline.notes_ == []  # the bundle's own training data: fingerprint matches
        assert baseline.window_ == model.bundle_.window
        np.testing.assert_array_equal(baseline.scaler_.scale, model.scaler_.scale)  # the model's scaler
        scores = baseline.score_samples(live)
        np.testing.assert_array_equal(np.isnan(scores), np.isnan(reference))  # same warm-up rows
    # Another file than the model's training data is used, and said so.
    other = make_baseline("pca", source=model.bundle_).fit(live)
    assert any("not the model's training data" in note for note in other.notes_)


def test_unknown_baseline_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="unknown baseline 'svm'"):
        make_baseline("svm")


def test_evaluate_baseline_reports_the_model_and_each_baseline_side_by_side(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    from memae_ts.cli import main

    history, live = plant_csvs
    base = ["evaluate", str(tiny_model_dir), str(live), "--engine", "numpy"]
    assert main([*base, "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    args = [*base, "--baseline", "pca", "--baseline", "iforest", "--train", str(history)]
    assert main([*args, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {k: got[k] for k in alone} == alone  # the model's own figures are unchanged
    assert set(got["baselines"]) == {"pca", "iforest"}
    for figures in got["baselines"].values():
        assert figures["n_rows"] == alone["n_rows"] and figures["n_scored"] == alone["n_scored"]
        assert figures["tp"] + figures["fn"] == alone["tp"] + alone["fn"]  # the same labels
        assert figures["notes"] == []
    assert "T²" in got["baselines"]["pca"]["description"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "model" in table and "pca" in table and "iforest" in table and "roc_auc" in table


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baseline", "pca"], "--baseline needs --train"),
        (["--train", "x.csv"], "--train is only used with --baseline"),
    ],
)
def test_evaluate_baseline_options_without_their_partner_fail_in_one_line(
    tiny_model_dir: Path,
    plant_csvs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    from memae_ts.cli import main

    assert main(["evaluate", str(tiny_model_dir), str(plant_csvs[1]), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.slow
def test_ae_baseline_is_the_models_network_without_memory(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    pytest.importorskip("torch")
    from memae_ts.estimator import load

    model = load(tiny_model_dir, engine="numpy")
    baseline = make_baseline("ae", source=model.bundle_).fit(plant_csvs[0])
    spec = baseline.model_.bundle_.config["training"]["network_spec"]
    assert spec["use_memory"] is False
    assert baseline.model_.bundle_.network.get("memory") is None
    for key in ("window", "latent", "channels"):
        assert spec[key] == model.bundle_.config["training"]["network_spec"][key]
    assert baseline.notes_ == []
    scores = baseline.score_samples(plant_csvs[1])
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(model.score_samples(plant_csvs[1])))


# ---------------------------------------------------------------- scoring choices


def test_mean_reduction_is_the_engines_score_and_max_picks_the_worst_sensor(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    from memae_ts.estimator import load

    model = load(tiny_model_dir, engine="numpy")
    _, result = model.score_rows(plant_csvs[1])
    scored = np.isfinite(result.score)
    c = result.contributions[scored]
    np.testing.assert_allclose(Reduction.fit("mean")(c), result.score[scored], rtol=1e-6)
    np.testing.assert_array_equal(Reduction.fit("max")(c), c.max(axis=1))


def test_mahalanobis_uses_a_ledoit_wolf_covariance_and_round_trips_through_the_config() -> None:
    sklearn_cov = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(0)
    held = rng.gamma(2.0, 1.0, size=(49, 8)) * np.linspace(0.1, 3.0, 8)  # few windows, skewed errors
    reduction = Reduction.fit("mahalanobis", held)
    reference = sklearn_cov.LedoitWolf().fit(held)
    np.testing.assert_allclose(reduction.center, reference.location_)
    np.testing.assert_allclose(np.linalg.inv(reduction.precision), reference.covariance_, rtol=1e-6)
    probe = rng.gamma(2.0, 1.0, size=(5, 8))
    expected = np.sqrt(reference.mahalanobis(probe))
    np.testing.assert_allclose(reduction(probe), expected, rtol=1e-6)
    again = Reduction.from_config(json.loads(json.dumps(reduction.to_config())))
    np.testing.assert_allclose(again(probe), expected, rtol=1e-6)
    with pytest.raises(DataError, match="at least 3 held-out windows"):
        Reduction.fit("mahalanobis", held[:2])
    with pytest.raises(DataError, match="unknown score reduction"):
        Reduction.fit("median")


def test_last_rows_weights_favour_the_row_the_window_scores() -> None:
    w = last_rows_weights(32, 8.0)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) > 0)
    assert w[-1] / w[-9] == pytest.approx(2.0)  # one half-life back weighs half


# ---------------------------------------------------------------- bootstrap


def test_file_bootstrap_interval_covers_the_point_and_a_dominated_variant_loses_every_draw() -> None:
    from bench.bootstrap import FileScores, intervals

    rng = np.random.default_rng(1)

    def files(shift: float, seed_noise: float) -> list[FileScores]:
        out = []
        for i in range(12):
            labels = (np.arange(200) >= 120 - 5 * i).astype(np.int64)
            base = rng.normal(0.5, 0.3, 200) + seed_noise
            out.append(FileScores(labels, base + labels * shift))
        return out

    good = [files(1.5, 0.0), files(1.5, 0.05)]  # two seeds
    bad = [files(0.2, 0.0), files(0.2, 0.05)]
    got = intervals({"good": good, "bad": bad}, [("good", "bad")], n_boot=200)
    for name in ("good", "bad"):
        for cell in got[name].values():
            assert cell["low"] <= cell["value"] <= cell["high"]
    assert got["good - bad"]["roc_auc"]["share_a_above"] == 1.0
    assert got["good - bad"]["roc_auc"]["low"] > 0
    with pytest.raises(ValueError, match="different numbers of files"):
        intervals({"a": good, "b": [good[0][:5]]}, n_boot=10)
