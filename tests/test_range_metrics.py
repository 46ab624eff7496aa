"""VUS-PR, VUS-ROC and range-based F1 from the `[metrics]` extra (tsadmetrics), issue #16.5:
small cases computed by hand, and `memae-ts evaluate --range-metrics`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from memae_ts.errors import MissingDependencyError
from memae_ts.evaluation.metrics import RANGE_METRICS_HINT, range_metrics

tsadmetrics = pytest.importorskip("tsadmetrics")


def test_range_f1_by_hand() -> None:
    # One labelled range of 4 rows (2..5), one alarm of 4 rows (4..7) overlapping 2 of them:
    # range recall = 2/4, range precision = 2/4 (flat bias, no existence reward) -> F1 0.5.
    y = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    alarm = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    assert range_metrics(y, alarm.astype(float), alarm, vus_window=0)["range_f1"] == pytest.approx(0.5)
    # Two labelled ranges, the alarm covers the first exactly: recall (1 + 0) / 2, precision 1 -> 2/3.
    # Point-wise F1 would be the same here; it differs from range F1 on the first case (0.5 both).
    y = np.array([0, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    alarm = np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert range_metrics(y, alarm.astype(float), alarm, vus_window=0)["range_f1"] == pytest.approx(2 / 3)
    # A long alarm over a short fault: point precision 1/6, range precision 1/6, recall 1 -> 2/7.
    y = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    alarm = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    assert range_metrics(y, alarm.astype(float), alarm, vus_window=0)["range_f1"] == pytest.approx(2 / 7)


def test_vus_without_buffer_is_the_point_auc_by_hand() -> None:
    # positives score 0.35 and 0.8; negatives 0.1, 0.4, 0.2, 0.05.
    # ROC-AUC: 0.35 beats 3 of 4 negatives, 0.8 beats 4 of 4 -> 7/8.
    # PR (average precision): ranked 0.8 (hit, P=1), 0.4 (miss), 0.35 (hit, P=2/3) -> (1 + 2/3) / 2.
    y = np.array([0, 0, 1, 1, 0, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.05])
    out = range_metrics(y, s, (s >= 0.5).astype(int), vus_window=0)
    assert out["vus_roc"] == pytest.approx(7 / 8)
    assert out["vus_pr"] == pytest.approx(5 / 6)
    assert out["vus_window"] == 0


def test_vus_buffer_credits_a_late_alarm() -> None:
    """A score that rises just after the labelled range: the buffer gives it credit that the
    point AUC does not, and a perfect score stays perfect at every buffer width."""
    y = np.zeros(60, dtype=int)
    y[20:26] = 1
    late = np.zeros(60)
    late[24:30] = 1.0  # half inside, half just after
    at0 = range_metrics(y, late, (late > 0).astype(int), vus_window=0)
    at8 = range_metrics(y, late, (late > 0).astype(int), vus_window=8)
    assert at8["vus_pr"] > at0["vus_pr"] and at8["vus_roc"] > at0["vus_roc"]
    perfect = range_metrics(y, y.astype(float), y, vus_window=8)
    assert perfect["vus_pr"] == pytest.approx(1.0) and perfect["vus_roc"] == pytest.approx(1.0)


def test_unscored_rows_left_out_and_undefined_is_nan() -> None:
    y = np.array([0, 0, 1, 1, 0, 0])
    s = np.array([np.nan, np.nan, 0.35, 0.8, 0.2, 0.05])
    with_nan = range_metrics(y, s, (s >= 0.5).astype(int), vus_window=0)
    assert with_nan["vus_roc"] == pytest.approx(1.0)  # the two scored negatives are both lower
    none = range_metrics(np.zeros(6, dtype=int), np.arange(6.0), np.zeros(6, dtype=int), vus_window=2)
    assert np.isnan(none["vus_pr"]) and np.isnan(none["vus_roc"]) and np.isnan(none["range_f1"])
    with pytest.raises(ValueError, match="differ in length"):
        range_metrics(y, s[:3], y, vus_window=0)


def test_without_the_extra_one_line_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    # A missing package cannot be produced on demand in this venv: hide it from the importer.
    for name in [m for m in sys.modules if m.startswith("tsadmetrics")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tsadmetrics", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'memae-ts\[metrics\]'") as info:
        range_metrics([0, 1], [0.0, 1.0], [0, 1], vus_window=0)
    assert str(info.value) == RANGE_METRICS_HINT


def test_evaluate_cli_range_metrics(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from memae_ts.cli import main

    model, live = str(tiny_model_dir), str(plant_csvs[1])
    args = ["evaluate", model, live, "--label-column", "anomaly", "--engine", "numpy"]
    assert main([*args, "--range-metrics", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["vus_window"] == 16  # the model's window
    for key in ("vus_pr", "vus_roc", "range_f1"):
        assert 0.0 < out[key] <= 1.0, key
    assert out["vus_roc"] > 0.7  # the demo faults are found
    assert main([*args, "--vus-window", "4"]) == 2
    assert "--vus-window is only used with --range-metrics" in capsys.readouterr().err
