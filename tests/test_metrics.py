"""memae_ts.evaluation.metrics against scikit-learn, plus edge cases scikit-learn does not decide."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memae_ts.evaluation.metrics import (
    average_precision,
    confusion_counts,
    evaluate,
    point_adjust,
    rates,
    roc_auc,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_case(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    y[0], y[1] = 0, 1  # both classes present
    s = rng.normal(size=n) + 1.5 * y
    if ties:
        s = np.round(s, 1)  # many tied scores, across classes
    return y, s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _random_case(seed, 50 + 37 * seed, ties)
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(
        sklearn_metrics.average_precision_score(y, s), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(6))
def test_threshold_metrics_match_sklearn(seed: int) -> None:
    y, s = _random_case(seed, 200, ties=True)
    threshold = float(np.quantile(s, 0.7))
    out = evaluate(y, s, threshold)
    p = (s >= threshold).astype(int)
    assert out["precision"] == pytest.approx(sklearn_metrics.precision_score(y, p))
    assert out["recall"] == pytest.approx(sklearn_metrics.recall_score(y, p))
    assert out["f1"] == pytest.approx(sklearn_metrics.f1_score(y, p))
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(y, p, labels=[0, 1]).ravel()
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (tp, fp, tn, fn)
    assert out["far"] == pytest.approx(fp / (fp + tn))
    assert out["mar"] == pytest.approx(fn / (fn + tp))
    assert out["mar"] == pytest.approx(1 - out["recall"])


def test_skab_f1_formula_is_the_usual_f1() -> None:
    counts = {"tp": 30, "fp": 10, "tn": 50, "fn": 20}
    r = rates(counts)
    assert r["f1"] == pytest.approx(30 / (30 + (10 + 20) / 2))
    assert r["f1"] == pytest.approx(2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"]))
    assert r["far"] == pytest.approx(10 / 60)
    assert r["mar"] == pytest.approx(20 / 50)


def test_threshold_is_inclusive_like_predict() -> None:
    out = evaluate([0, 1, 1], [0.5, 1.0, 2.0], threshold=1.0)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 0, 0)


def test_nan_scores_excluded_by_default() -> None:
    y = [1, 1, 0, 0, 1]
    s = [np.nan, np.nan, 0.1, 0.2, 0.9]
    out = evaluate(y, s, 0.5)
    assert out["n_unscored"] == 2 and out["n_scored"] == 3 and out["n_rows"] == 5
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (1, 0, 0, 2)
    assert out["roc_auc"] == 1.0


def test_nan_scores_as_normal_become_misses_and_rank_lowest() -> None:
    y = [1, 1, 0, 0, 1]
    s = [np.nan, np.nan, 0.1, 0.2, 0.9]
    out = evaluate(y, s, 0.5, nan_policy="normal")
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (1, 2, 0, 2)
    assert out["roc_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, [-1, -1, 0.1, 0.2, 0.9]))
    # Even a threshold below every score never flags an unscored row.
    low = evaluate(y, s, -100.0, nan_policy="normal")
    assert low["fn"] == 2


def test_single_class_gives_nan_not_a_fake_perfect_score() -> None:
    out = evaluate([0, 0, 0], [0.1, 0.2, 0.3], 0.25)
    assert math.isnan(out["recall"]) and math.isnan(out["mar"]) and math.isnan(out["roc_auc"])
    assert math.isnan(out["pr_auc"])
    assert out["far"] == pytest.approx(1 / 3)


def test_point_adjust_fills_segments_with_any_hit() -> None:
    y = np.array([0, 1, 1, 1, 0, 1, 1, 0])
    p = np.array([0, 0, 1, 0, 0, 0, 0, 1])
    assert point_adjust(y, p).tolist() == [0, 1, 1, 1, 0, 0, 0, 1]
    out = evaluate(y, p.astype(float), 0.5)
    assert out["point_adjusted_f1"] > out["f1"]
    # Labels at the very start and end of the series are segments too.
    assert point_adjust([1, 0, 1], [1, 0, 1]).tolist() == [1, 0, 1]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        evaluate([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="length"):
        evaluate([0, 1], [0.1], 0.5)
    with pytest.raises(ValueError, match="inf"):
        evaluate([0, 1], [0.1, np.inf], 0.5)
    with pytest.raises(ValueError, match="nan_policy"):
        evaluate([0, 1], [0.1, 0.2], 0.5, nan_policy="zero")
    with pytest.raises(ValueError, match="differ"):
        confusion_counts([0, 1], [1])
