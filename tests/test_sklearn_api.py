"""MemAE as a scikit-learn estimator and a PyOD detector (issue #16.2).

scikit-learn's own `check_estimator` suite runs on MemAE; the checks that contradict the contract
of an unsupervised detector of time-ordered windows are listed in EXPECTED_FAILED with the
reason, everything else must pass. The pipeline test does what a user tuning a model would do.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.errors import DataError, NotFittedError

pytest.importorskip("torch")
sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from memae_ts import MemAE  # noqa: E402

# scikit-learn's check data sets have 20-60 rows: the warning that few windows were held out for
# the threshold is right there, and not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::memae_ts.io.data.DataWarning")

SMALL = {
    "window": 4,
    "epochs": 2,
    "patience": 1,
    "channels": (4,),
    "hidden": (8,),
    "latent": 4,
    "kernel_size": 3,
    "memory_slots": 8,
    "batch_size": 16,
}

# Each check skipped (run as an expected failure) with the reason it conflicts with the contract.
EXPECTED_FAILED = {
    "check_methods_subset_invariance": (
        "a row's score depends on the window of rows before it: scoring a subset of rows scores "
        "other windows (the first window-1 rows of any input are NaN warm-up)"
    ),
    "check_methods_sample_order_invariance": (
        "rows are readings in time order; shuffled rows are other windows, so other scores"
    ),
    "check_estimators_unfitted": (
        "an unfitted MemAE raises memae_ts.errors.NotFittedError, a ValueError and AttributeError "
        "like scikit-learn's NotFittedError but not that class: scikit-learn is not imported on a "
        "gateway that only scores"
    ),
    "check_dtype_object": (
        "object arrays of numbers are accepted; a cell that is not a number is a DataError (a "
        "ValueError naming the input, like every bad input), not the TypeError this check wants"
    ),
    "check_fit2d_1sample": (
        "one row is refused with a message naming the window length the data is too short for, "
        "not with the '1 sample' wording this check matches"
    ),
    "check_estimators_empty_data_messages": (
        "an array without columns is refused ('no numeric sensor columns found'), not with "
        "scikit-learn's '0 feature(s) (shape=...)' wording"
    ),
}


def _expected_failed(estimator: object) -> dict[str, str]:
    return EXPECTED_FAILED


with warnings.catch_warnings():
    # scikit-learn warns that MemAE does not inherit BaseEstimator: on purpose, see
    # memae_ts.sklearn_compat (no scikit-learn import on a scoring-only gateway).
    warnings.filterwarnings("ignore", message=".*does not inherit from `sklearn.base.BaseEstimator`")
    _CHECKS = parametrize_with_checks([MemAE(**SMALL)], expected_failed_checks=_expected_failed)


@_CHECKS
def test_sklearn_check_estimator(estimator: MemAE, check: object) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not inherit from `sklearn.base.BaseEstimator`")
        check(estimator)  # type: ignore[operator]


def test_params_protocol_without_importing_sklearn() -> None:
    """get_params(deep)/set_params work from memae_ts alone, and importing the estimator does not
    pull in scikit-learn (1-3 s and SciPy on every `memae-ts score`)."""
    model = MemAE(window=8)
    assert model.get_params(deep=False)["window"] == 8
    assert model.get_params(deep=True) == model.get_params(deep=False)
    assert model.set_params(window=12, epochs=3) is model
    assert (model.window, model.epochs) == (12, 3)
    with pytest.raises(ValueError, match=r"invalid parameter 'windw'.*valid parameters are: \[.*'window'"):
        model.set_params(windw=5)
    code = "import sys, memae_ts.estimator; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _messy_plant(plant_csvs: tuple[Path, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History and live data indexed by time, with a two-hour gap and dropped-out readings."""
    history, live = (pd.read_csv(p, parse_dates=["timestamp"]).set_index("timestamp") for p in plant_csvs)
    history = history.drop(history.index[200:224])  # a two-hour outage: the series splits there
    history.iloc[50:52, 2] = np.nan  # a sensor drops out for two readings: filled, and counted
    return history.drop(columns="anomaly"), live


def test_pyod_attributes_on_time_indexed_frame(plant_csvs: tuple[Path, Path]) -> None:
    history, live = _messy_plant(plant_csvs)
    model = MemAE(**{**SMALL, "window": 8, "epochs": 3}, seed=1)
    labels = model.fit_predict(history)
    sensors = list(history.columns)
    assert model.n_features_in_ == len(sensors)
    assert list(model.feature_names_in_) == sensors
    # PyOD: training scores in input order, higher = more abnormal, labels 0/1 against threshold_.
    assert model.decision_scores_.shape == (len(history),)
    assert np.isnan(model.decision_scores_[:7]).all() and np.isnan(model.decision_scores_[200:207]).all()
    np.testing.assert_array_equal(labels, model.labels_)
    np.testing.assert_array_equal(
        model.labels_, (np.nan_to_num(model.decision_scores_) >= model.threshold_).astype(int)
    )
    np.testing.assert_allclose(model.decision_scores_, model.score_samples(history), equal_nan=True)
    live_x = live.drop(columns="anomaly")
    np.testing.assert_array_equal(model.decision_function(live_x), model.score_samples(live_x))
    faults = live["anomaly"].to_numpy() == 1
    assert model.predict(live_x)[faults].mean() > model.labels_.mean()  # faults flagged more often

    # A numpy array has no column names: n_features_in_ only, and a wrong width is refused.
    array_model = MemAE(**SMALL).fit(history.to_numpy())
    assert array_model.n_features_in_ == len(sensors) and not hasattr(array_model, "feature_names_in_")
    with pytest.raises(DataError, match=f"X has 3 features, but MemAE is expecting {len(sensors)}"):
        array_model.predict(history.to_numpy()[:, :3])
    with pytest.raises(NotFittedError):
        MemAE().decision_function(history)


def test_array_inputs_are_refused_not_guessed() -> None:
    model = MemAE(**SMALL)
    rows = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(DataError, match=r"Reshape your data: X\.reshape"):
        model.fit(rows[:, 0])  # one sensor or one row? not guessed
    with pytest.raises(DataError, match="Complex data not supported"):
        model.fit(rows + 1j)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(DataError, match="sparse input is not supported"):
        model.fit(scipy_sparse.csr_matrix(rows))
    model.fit(rows.astype(object))  # numbers in an object array are numbers
    assert model.n_features_in_ == 2


def _hydraulic_power(frame: pd.DataFrame) -> pd.DataFrame:
    """A derived sensor, as a process engineer would add one: hydraulic power in kW."""
    head_bar = frame["discharge_pressure_bar"] - frame["suction_pressure_bar"]
    return frame.assign(hydraulic_kw=frame["flow_m3h"] * head_bar / 36.0)


def _average_precision(estimator: Pipeline, X: pd.DataFrame, y: np.ndarray) -> float:
    """Scorer on labelled validation data; warm-up rows (NaN) carry no score and are left out."""
    scores = estimator.score_samples(X)
    scored = ~np.isnan(scores)
    return float(average_precision_score(np.asarray(y)[scored], scores[scored]))


def test_clone_pipeline_and_grid_search_with_a_scorer(plant_csvs: tuple[Path, Path]) -> None:
    history, live = _messy_plant(plant_csvs)
    X = pd.concat([history, live.drop(columns="anomaly")])
    y = np.concatenate([np.zeros(len(history), dtype=int), live["anomaly"].to_numpy()])
    train = np.arange(len(history))  # learn from normal history, choose on the labelled days
    validate = np.arange(len(history), len(X))

    pipe = Pipeline(
        [("features", FunctionTransformer(_hydraulic_power)), ("memae", MemAE(**SMALL, seed=2))]
    )
    twin = clone(pipe)
    assert twin.get_params()["memae__window"] == 4
    assert twin.named_steps["memae"] is not pipe.named_steps["memae"]
    search = GridSearchCV(
        pipe,
        {"memae__window": [4, 12]},
        scoring=_average_precision,
        cv=[(train, validate)],
        refit=False,  # refitting on train + validate would learn the labelled faults as normal
        error_score="raise",
    )
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores > y[validate].mean()).all()  # better than chance
    best = clone(pipe).set_params(**search.best_params_).fit(history)
    assert best.named_steps["memae"].feature_names_in_[-1] == "hydraulic_kw"
    assert _average_precision(best, X.iloc[validate], y[validate]) == pytest.approx(
        search.best_score_, rel=1e-6
    )
