"""Smoke versions of the two benchmarks: the full pipeline on a sliver of the data.

They guard the benchmark scripts themselves (data loading, protocol split, scoring, pooling,
reporting) and check the detector beats a trivial baseline; the real figures come from the
full runs in docs/benchmarks.md. Skipped when ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SKAB = SHARED / "SKAB" / "data"
KDD = SHARED / "kddcup99" / "kdd_cup.npz"
sys.path.insert(0, str(REPO))


@pytest.mark.skipif(not (SKAB / "valve1" / "0.csv").exists(), reason=f"SKAB data absent at {SKAB}")
def test_skab_smoke_one_file_beats_chance(tmp_path: Path) -> None:
    from bench import skab

    out = tmp_path / "skab.json"
    scores = tmp_path / "scores.npz"
    code = skab.main(
        [
            "--data", str(SKAB),
            "--files", "valve1/0.csv",
            "--variants", "memae",
            "--epochs", "8",
            "--no-anomaly-free",
            "--json-out", str(out),
            "--scores-out", str(scores),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    (name, metrics, _seconds), (whole_name, whole, _), (ahead_name, ahead, _) = result["rows"]
    assert name.startswith("memae") and "whole" in whole_name and "looks ahead" in ahead_name
    # Waiting for every covering window can only remove alarms.
    assert ahead["n_rows"] == metrics["n_rows"]
    assert ahead["tp"] + ahead["fp"] <= metrics["tp"] + metrics["fp"]
    # The changepoint view: NAB per profile, at most 100 (a perfect detector).
    for rule in ("streaming", "look-ahead"):
        nab = result["nab"][f"memae ({rule})"]
        assert set(nab) == {"standard", "low_fp", "low_fn"}
        assert all(np.isfinite(v) and v <= 100 for v in nab.values())
    assert whole["n_rows"] == 1147
    # The leaderboard protocol: every test row (file rows 400 onward) is counted.
    assert metrics["n_rows"] == 1147 - skab.TRAIN_ROWS
    assert metrics["n_unscored"] == 0  # windows reach back into the training rows
    # Beats a constant score (ROC-AUC 0.5) clearly, and its F1 is a real number.
    assert metrics["roc_auc"] > 0.6
    assert 0.0 <= metrics["f1"] <= 1.0
    saved = np.load(scores)
    assert saved["memae/valve1/0.csv"].shape == (1147,)

    # The post hoc diagnostics account for every false alarm and miss of the same run.
    from bench.skab_diagnostics import errors

    found = errors(saved, str(SKAB), "memae", 32)
    assert found["negatives"] + found["positives"] == metrics["n_rows"]
    assert sum(found["false_alarms"].values()) == metrics["fp"]
    assert sum(m["missed"] for m in found["misses"].values()) == metrics["fn"]
    assert found["misses"]["valve1/0.csv"]["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-9)


def test_every_covering_window_is_the_lowest_score_of_the_windows_containing_the_row() -> None:
    from bench.skab import every_covering_window

    # Score at row t = the window ending at row t (window 3 covers rows t-2 .. t).
    scores = np.array([np.nan, np.nan, 2.0, 3.0, 0.5, 4.0, 5.0, 6.0, 1.5])
    got = every_covering_window(scores, 3)
    # Row 2 lies in the windows ending at rows 2, 3, 4; rows 0-1 lack one (warm-up), rows 7-8
    # lack one (end of file).
    np.testing.assert_array_equal(got, [np.nan, np.nan, 0.5, 0.5, 0.5, 4.0, 1.5, np.nan, np.nan])
    assert np.isnan(every_covering_window(np.ones(2), 3)).all()


def test_false_alarm_places_split_by_position_relative_to_the_fault() -> None:
    from bench.skab_diagnostics import false_alarm_places

    labels = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    alarms = np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    # Rows 0, 2 before the fault; row 5 inside it; rows 7-8 within 2 rows after; row 10 later.
    expected = {"before": 2, "trailing_window": 2, "later": 1, "between": 1}
    assert false_alarm_places(labels, alarms, 2) == expected


def test_best_operating_points_scan_the_threshold_for_the_goal_bounds() -> None:
    from bench.skab_diagnostics import best_operating_points

    labels = np.array([0] * 10 + [1] * 10)
    scores = np.r_[np.linspace(0.1, 1.0, 10), np.linspace(0.55, 1.45, 10)]
    found = best_operating_points(labels, scores)
    low_far = found["lowest_far_at_goal_mar"]
    # MAR <= 28.02 % allows 2 misses of 10; the threshold then sits above 0.65 (FAR 3/10).
    assert low_far["mar"] == pytest.approx(0.2) and low_far["far"] == pytest.approx(0.3)
    low_mar = found["lowest_mar_at_goal_far"]
    # FAR <= 13.55 % allows one false alarm (the 1.0); the anomalies below 0.9 are then missed.
    assert low_mar["far"] == pytest.approx(0.1) and low_mar["mar"] == pytest.approx(0.4)


def test_average_scores_is_the_per_file_mean_of_several_runs(tmp_path: Path) -> None:
    from bench.skab_diagnostics import average_scores

    np.savez(tmp_path / "a.npz", **{"memae/x.csv": np.array([1.0, np.nan, 3.0])})
    np.savez(tmp_path / "b.npz", **{"memae/x.csv": np.array([3.0, np.nan, 1.0])})
    averaged = average_scores([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    np.testing.assert_array_equal(averaged["memae/x.csv"], [2.0, np.nan, 2.0])


def test_calibration_finds_the_statistic_that_tracks_later_scores() -> None:
    from bench.skab_diagnostics import calibration

    rng = np.random.default_rng(0)
    chunks = []
    for level in (0.5, 1.0, 3.0):
        held = level * rng.uniform(0.8, 1.2, 49)
        chunks.append(
            {
                "train": rng.uniform(0.1, 0.2, 289),  # says nothing about the level
                "held": held,
                "future": np.median(held) * rng.uniform(0.5, 2.0, 800),
                "threshold": np.array([held.max()]),
            }
        )
    found = calibration(chunks)
    assert found["held-out median"]["sd_log_median"] < 0.05
    assert found["training-window median"]["sd_log_median"] > 0.5
    assert found["held-out median"]["share_above_sd"] < found["training-window median"]["share_above_sd"]


def test_drift_is_measured_in_units_of_the_fitted_scales() -> None:
    import pandas as pd

    from bench.skab_diagnostics import FUTURE_ROWS, TRAIN_ROWS, drift

    rng = np.random.default_rng(0)
    rows = TRAIN_ROWS + FUTURE_ROWS
    steady = 100.0 + rng.normal(0.0, 2.0, rows)
    shifted = 100.0 + rng.normal(0.0, 2.0, rows)
    shifted[TRAIN_ROWS:] += 10.0  # five standard deviations later on
    frame = pd.DataFrame({"datetime": np.arange(rows), "steady": steady, "shifted": shifted})
    found = drift(frame, [0])
    assert found["steady"] == pytest.approx(1.0, abs=0.1)
    assert found["shifted"] == pytest.approx(np.sqrt(1 + 5**2), rel=0.1)


@pytest.mark.skipif(not (SKAB / "anomaly-free").exists(), reason=f"SKAB data absent at {SKAB}")
def test_calibration_chunk_uses_the_estimators_own_held_out_windows() -> None:
    from bench.skab import read
    from bench.skab_diagnostics import chunk_scores

    frame = read(str(SKAB), "anomaly-free/anomaly-free.csv")
    chunk = chunk_scores(frame, 400, {"epochs": 2, "seed": 0})
    assert chunk["train"].size == 320 - 31 and chunk["held"].size == 400 - 320 - 31
    assert chunk["future"].size == 800 and np.isfinite(chunk["future"]).all()
    # The estimator's threshold (no margin) is the 0.995 quantile of exactly these windows.
    assert chunk["threshold"][0] == pytest.approx(np.quantile(chunk["held"], 0.995), rel=1e-6)


def test_skab_script_skips_cleanly_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import skab

    assert skab.main(["--data", str(tmp_path / "nowhere")]) == 0
    assert "not found" in capsys.readouterr().err


@pytest.mark.skipif(not KDD.exists(), reason=f"KDDCUP99 data absent at {KDD}")
def test_kdd_smoke_one_run_beats_flag_everything(tmp_path: Path) -> None:
    from bench import kddcup99

    out = tmp_path / "kdd.json"
    code = kddcup99.main(
        # lr 1e-3 (not the benchmark's 1e-4): 5 epochs on 3 % of the rows is ~200 steps.
        ["--runs", "1", "--epochs", "5", "--batch-size", "128", "--learning-rate", "1e-3",
         "--subsample", "0.03", "--per-epoch", "--baselines", "pca",
         "--variants", "memae", "ae", "--data", str(KDD), "--json-out", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    for variant in ("memae", "ae", "pca"):
        run = result["results"][variant]["dagmm"][0]
        # Flagging every test row gives F1 = 2·0.33/1.33 ≈ 0.49 (a third of the test set is label 1).
        flag_all = 2 * (run["tp"] + run["fn"]) / (run["n_rows"] + run["tp"] + run["fn"])
        assert run["f1"] > flag_all + 0.2, variant
        assert result["auc"][variant][0][0] > 0.9, variant
    # Per epoch: one point per epoch (no early stopping in this mode), and the weights training
    # kept at the end (the best held-out loss) score exactly as that epoch's point did.
    for variant in ("memae", "ae"):
        (entry,) = result["per_epoch"][variant]
        assert [p["epoch"] for p in entry["curve"]] == [1, 2, 3, 4, 5]
        best = int(np.argmin(entry["val_loss"]))
        kept = result["results"][variant]["dagmm"][0]["f1"]
        assert entry["curve"][best]["f1"] == pytest.approx(kept, abs=1e-9), variant
        assert 1 <= entry["early_stop_epoch"] <= 5


def test_early_stop_epoch_is_the_best_loss_before_patience_runs_out() -> None:
    from bench.kddcup99 import early_stop_epoch

    # Best at epoch 3; epochs 4-6 do not improve, so patience 3 stops there and keeps epoch 3
    # (the better loss at epoch 7 is never reached).
    assert early_stop_epoch([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 2.0], patience=3) == 3
    assert early_stop_epoch([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 2.0], patience=5) == 7


def test_kdd_split_follows_the_protocol() -> None:
    from bench.kddcup99 import split

    labels = np.r_[np.zeros(100, dtype=np.int64), np.ones(25, dtype=np.int64)]
    train, test = split(labels, seed=3)
    assert np.all(labels[train] == 0) and train.size == 50
    assert set(np.flatnonzero(labels == 1)) <= set(test.tolist())
    assert np.intersect1d(train, test).size == 0 and train.size + test.size == labels.size
    assert not np.array_equal(split(labels, seed=4)[0], train)


def test_kdd_runs_side_by_side_merge_into_run_level_intervals_and_pairs(tmp_path: Path) -> None:
    """Seeds run in two processes pool as one set of runs; the interval is Student's t over the
    runs and the difference against the plain AE is paired by split."""
    from bench.kddcup99 import interval, merge_runs, summary_tables

    def part(first_seed: int, memae: list[float], ae: list[float]) -> dict[str, object]:
        runs = len(memae)
        return {
            "settings": {}, "runs": runs, "first_seed": first_seed, "wall_seconds": 10.0,
            "cpu_seconds": {"memae": 4.0 * runs, "ae": 2.0 * runs},
            "results": {v: {r: [{"f1": f} for f in f1s] for r in ("dagmm", "memae-ts")}
                        for v, f1s in (("memae", memae), ("ae", ae))},
            "auc": {"memae": [[0.98, 0.95]] * runs, "ae": [[0.97, 0.94]] * runs},
            "per_epoch": {},
        }  # fmt: skip

    (tmp_path / "a.json").write_text(json.dumps(part(0, [0.90, 0.94, 0.96], [0.89, 0.90, 0.95])))
    (tmp_path / "b.json").write_text(json.dumps(part(3, [0.92, 0.93], [0.93, 0.90])))
    merged = merge_runs([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert merged["seeds"] == [0, 1, 2, 3, 4]
    assert [m["f1"] for m in merged["results"]["memae"]["dagmm"]] == [0.90, 0.94, 0.96, 0.92, 0.93]
    # mean 0.93, std 0.02236, t(0.975, 4) = 2.7764: half-width 0.0278
    assert interval([0.90, 0.94, 0.96, 0.92, 0.93]) == "0.9300 [0.9022, 0.9578]"
    table = summary_tables(merged)
    # Paired by split: differences 0.01, 0.04, 0.01, -0.01, 0.03 (MemAE above on 4 of 5).
    assert "| memae − ae | 0.0160 [" in table and "| 4 of 5 |" in table
    assert "| memae | 0.9300 [0.9022, 0.9578] | 0.9800" in table


def test_skab_pairs_each_measured_choice_with_the_model_it_changes() -> None:
    from bench.skab import variant_pairs

    runs = dict.fromkeys(
        ["memae", "ae", "memae, alarm rule", "memae:last_rows", "ae:max", "memae_span",
         "memae_span, alarm rule", "memae+novelty", "pca"]
    )  # fmt: skip
    assert sorted(variant_pairs(runs)) == [
        ("ae:max", "ae"),
        ("memae:last_rows", "memae"),
        ("memae_span", "memae"),
        ("memae_span, alarm rule", "memae, alarm rule"),
    ]


def test_kdd_script_skips_cleanly_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import kddcup99

    assert kddcup99.main(["--data", os.fspath(tmp_path / "missing.npz")]) == 0
    assert "not found" in capsys.readouterr().err


def test_conv_ae_rules_read_the_windows_as_the_leaderboard_notebook() -> None:
    from bench.skab_conv_ae import WINDOW, persistence_rules

    # 400 windows over 459 rows; windows 100..200 are above the UCL (window w covers w .. w+59).
    above = np.zeros(400, dtype=bool)
    above[100:201] = True
    notebook, causal = persistence_rules(above, 400 + WINDOW - 1)
    # Notebook: row i needs windows i-59 .. i-1 above, i.e. 100 <= i-59 and i-1 <= 200.
    assert np.flatnonzero(notebook).tolist() == list(range(159, 202))
    # Streaming: the 59 windows ending at rows r-58 .. r (windows r-117 .. r-59) all above.
    assert np.flatnonzero(causal).tolist() == list(range(217, 260))
    # A gap of one window breaks both; the notebook never flags its last 59 windows' rows.
    above[150] = False
    notebook, causal = persistence_rules(above, 459)
    assert not notebook.any() and not causal.any()
    tail = np.ones(400, dtype=bool)
    notebook, causal = persistence_rules(tail, 459)
    assert np.flatnonzero(notebook).tolist() == list(range(59, 341))
    assert np.flatnonzero(causal).tolist() == list(range(117, 459))


@pytest.mark.skipif(not (SKAB / "valve1" / "0.csv").exists(), reason=f"SKAB data absent at {SKAB}")
def test_conv_ae_reference_runs_one_file(tmp_path: Path) -> None:
    from bench import skab_conv_ae

    out = tmp_path / "conv_ae.json"
    code = skab_conv_ae.main(["--data", str(SKAB), "--files", "valve1/0.csv", "--json-out", str(out)])
    assert code == 0
    rows = {(r["rule"], r["first_row"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(rule, first) for rule in ("notebook", "causal", "score") for first in (0, 400)}
    assert rows["notebook", 0]["n_rows"] == 1147 and rows["notebook", 400]["n_rows"] == 747
    # Same model, same anomalies: counting the training rows adds true negatives only here.
    for rule in ("notebook", "causal", "score"):
        assert rows[rule, 0]["tp"] == rows[rule, 400]["tp"]
        assert rows[rule, 0]["tn"] > rows[rule, 400]["tn"]
        assert set(rows[rule, 400]["nab"]) == {"standard", "low_fp", "low_fn"}
    # The detector finds the fault: the published rule flags labelled rows far above chance.
    notebook = rows["notebook", 400]
    assert notebook["precision"] > 0.8 and notebook["recall"] > 0.5


def test_conv_ae_script_skips_cleanly_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import skab_conv_ae

    assert skab_conv_ae.main(["--data", str(tmp_path / "nowhere")]) == 0
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (SKAB / "valve1" / "0.csv").exists(), reason=f"SKAB data absent at {SKAB}")
def test_skab_modes_smoke_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/skab_modes.py on one file, two epochs: signals, rules and memories all reported."""
    from bench import skab_modes

    code = skab_modes.main(
        ["--data", str(SKAB), "--files", "valve1/0.csv", "--epochs", "2", "--parts", "detect", "follow",
         "--follow-rates", "0.05"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for row in ("| novelty |", "| entropy |", "| max(reconstruction, novelty) |", "per-mode thresholds",
                "| anomaly-free | frozen |", "| anomaly-free | follow rate 0.05 |"):  # fmt: skip
        assert row in out, row
    auc = float(out.split("| reconstruction | ")[1].split(" |")[0])
    assert 0.0 <= auc <= 1.0
