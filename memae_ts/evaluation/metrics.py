"""Detection-quality metrics, in numpy only, with the definitions the benchmarks publish.

Why numpy and not scikit-learn: the base install (scoring, edge, connectors) is kept lean, and
`memae-ts evaluate` must work there. The tests check every number against scikit-learn.

Conventions, the same everywhere in memae-ts:

- label 1 = anomaly (positive), 0 = normal; a higher score is more abnormal;
- a row is flagged when ``score >= threshold`` (exactly as `MemAE.predict`);
- point-wise counts, no point adjustment: F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN),
  MAR = FN / (FN + TP), as on the SKAB leaderboard;
- ROC-AUC uses average ranks for ties (Mann-Whitney U), PR-AUC is average precision
  (the step-wise sum of scikit-learn's `average_precision_score`, no interpolation);
- rows without a score (NaN: the first window-1 rows of a series, before a window is complete)
  are **excluded** by default (``nan_policy="exclude"``) and counted in ``n_unscored``, because
  the detector said nothing about them. ``nan_policy="normal"`` counts them as predicted normal
  instead (what an alarm panel shows during warm-up: no alarm); it then also ranks them below
  every scored row for ROC-AUC and PR-AUC.

Point-adjusted F1 (Xu et al. 2018: a whole labelled segment counts as found once any of its
rows is flagged) is reported as an extra under ``point_adjusted_f1`` only: it rewards a
detector that flags one lucky row per segment, so it is never the headline number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAN_POLICIES = ("exclude", "normal")


def _as_labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[~((y == 0) | (y == 1))])[:5]
        raise ValueError(f"labels must be 0 or 1 (1 = anomaly); found {bad.tolist()}")
    return y.astype(np.int64)


def confusion_counts(labels: Any, predictions: Any) -> dict[str, int]:
    """TP, FP, TN, FN of 0/1 predictions against 0/1 labels (1 = anomaly)."""
    y = _as_labels(labels)
    p = _as_labels(predictions)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    return {
        "tp": int(np.sum((p == 1) & (y == 1))),
        "fp": int(np.sum((p == 1) & (y == 0))),
        "tn": int(np.sum((p == 0) & (y == 0))),
        "fn": int(np.sum((p == 0) & (y == 1))),
    }


def _ratio(numerator: float, denominator: float) -> float:
    """0/0 is NaN: 'no positives' is not 'perfect' (undefined, not silently 0 or 1)."""
    return float(numerator / denominator) if denominator > 0 else float("nan")


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Precision, recall, F1, FAR and MAR from confusion counts (pool counts, then call this)."""
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(tp, tp + (fp + fn) / 2),
        "far": _ratio(fp, fp + tn),
        "mar": _ratio(fn, fn + tp),
    }


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve = P(score of a random anomaly > score of a random normal row).

    Computed from average ranks, so tied scores count one half, exactly like the trapezoidal
    ROC area. NaN when only one class is present.
    """
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Average rank (1-based) of each group of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    stops = np.r_[starts[1:], s.size]
    avg = (starts + stops + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, stops - starts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(labels: Any, scores: Any) -> float:
    """PR-AUC as average precision: Σ (R_k − R_{k−1}) P_k over distinct score thresholds.

    Same definition as scikit-learn's `average_precision_score` (no interpolation, which would
    be optimistic). NaN without positives.
    """
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: one operating point per distinct threshold.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = np.cumsum(y_sorted)[last]
    flagged = last + 1
    precision = tp / flagged
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def point_adjust(labels: Any, predictions: Any) -> np.ndarray:
    """Predictions with every labelled segment fully flagged if any of its rows is flagged."""
    y = _as_labels(labels)
    p = _as_labels(predictions).copy()
    edges = np.diff(np.r_[0, y, 0])
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if p[start:stop].any():
            p[start:stop] = 1
    return p


def evaluate(labels: Any, scores: Any, threshold: float, *, nan_policy: str = "exclude") -> dict[str, Any]:
    """All metrics for one scored series (or several pooled: concatenate normalised scores, threshold 1).

    Returns counts (tp, fp, tn, fn), precision, recall, f1, far, mar (fractions, not %),
    roc_auc, pr_auc, point_adjusted_f1 (extra, see module docstring), n_rows, n_scored,
    n_unscored, threshold and nan_policy. Undefined ratios (e.g. recall without anomalies) are NaN.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    if np.any(np.isposinf(s) | np.isneginf(s)):
        raise ValueError("scores contain ±inf; only NaN (no score yet) is allowed")
    scored = ~np.isnan(s)
    n_unscored = int(np.sum(~scored))
    if nan_policy == "exclude":
        y_eval, s_eval = y[scored], s[scored]
    else:
        y_eval = y
        floor = (np.nanmin(s) - 1.0) if scored.any() else 0.0
        s_eval = np.where(scored, s, floor)
    predictions = np.where(np.isnan(s_eval), 0, s_eval >= threshold).astype(np.int64)
    if nan_policy == "normal":
        predictions[~scored] = 0
    counts = confusion_counts(y_eval, predictions)
    adjusted = rates(confusion_counts(y_eval, point_adjust(y_eval, predictions)))["f1"]
    return {
        **counts,
        **rates(counts),
        "roc_auc": roc_auc(y_eval, s_eval),
        "pr_auc": average_precision(y_eval, s_eval),
        "point_adjusted_f1": adjusted,
        "n_rows": int(y.size),
        "n_scored": int(np.sum(scored)),
        "n_unscored": n_unscored,
        "threshold": float(threshold),
        "nan_policy": nan_policy,
    }


RANGE_METRICS_HINT = (
    "VUS-PR, VUS-ROC and range-based F1 need the metrics extra (tsadmetrics): "
    "pip install 'memae-ts[metrics]'"
)


def range_metrics(labels: Any, scores: Any, predictions: Any, *, vus_window: int) -> dict[str, Any]:
    """VUS-PR and VUS-ROC (Paparrizos et al., VLDB 2022) of the scores and the range-based F1
    (Tatbul et al., NeurIPS 2018) of the 0/1 predictions, from the maintained `tsadmetrics`
    package (the `[metrics]` extra), not rewritten here.

    VUS averages range-PR/ROC areas over label buffers of 0..`vus_window` rows (memae-ts passes
    the model's window: an alarm that far from a labelled range still earns partial credit).
    Range F1 uses the paper's defaults: flat positional bias, no existence reward (alpha 0),
    cardinality factor one. Unscored rows (NaN) are left out, as for the point metrics; several
    assets pooled count as one series. All NaN when there is no labelled anomaly (undefined).
    Slow on long series: VUS is roughly quadratic in the buffer, so `evaluate` runs these only
    with --range-metrics."""
    try:
        from tsadmetrics.metrics.tem.tpdm.RangebasedFScore import RangebasedFScore
        from tsadmetrics.metrics.tem.tstm.VusPr import VusPr
        from tsadmetrics.metrics.tem.tstm.VusRoc import VusRoc
    except ImportError as exc:
        from memae_ts.errors import MissingDependencyError

        raise MissingDependencyError(RANGE_METRICS_HINT) from exc
    y = _as_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = _as_labels(predictions)
    if not y.shape == s.shape == p.shape:
        raise ValueError(f"labels ({y.size}), scores ({s.size}) and predictions ({p.size}) differ in length")
    if vus_window < 0:
        raise ValueError(f"vus_window must be >= 0, got {vus_window}")
    scored = ~np.isnan(s)
    y, s, p = y[scored], s[scored], p[scored]
    out: dict[str, Any] = {"vus_pr": float("nan"), "vus_roc": float("nan"), "range_f1": float("nan")}
    if y.any() and not y.all():
        out["vus_pr"] = float(VusPr(window=int(vus_window)).compute(y, s))
        out["vus_roc"] = float(VusRoc(window=int(vus_window)).compute(y, s))
        flat = {"p_alpha": 0.0, "r_alpha": 0.0, "p_bias": "flat", "r_bias": "flat", "cardinality_mode": "one"}
        out["range_f1"] = float(RangebasedFScore(**flat).compute(y, p)) if p.any() else 0.0
    out["vus_window"] = int(vus_window)
    return out
