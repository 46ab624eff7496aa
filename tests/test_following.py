"""Drift following (memae_ts.detection.following): the memory moves with confidently normal windows only,
in bounded steps and within a bounded total drift, every update counted, back to the trained
memory on reset; a slow fault (the boiling frog) still alarms; API and CLI faces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts.detection.following import DriftFollower, FollowSettings
from memae_ts.engines.bundle import load_bundle
from memae_ts.engines.engine_numpy import NumpyEngine
from memae_ts.engines.runtime import Runtime
from memae_ts.io.demo_data import generate


def test_engines_accept_a_replaced_memory_and_give_it_back(tmp_path: Path) -> None:
    config, weights = random_bundle(seed=3, kind="conv")
    path = write_bundle(tmp_path / "m", config, weights)
    runtime, reference = Runtime.load(path), NumpyEngine(load_bundle(path))
    x = random_windows(config, 33)
    before = runtime.score(x)[0]
    trained = runtime.memory()
    np.testing.assert_allclose(trained, reference.memory(), rtol=1e-6)
    moved = trained + np.random.default_rng(0).normal(0, 0.1, trained.shape).astype(np.float32)
    runtime.set_memory(moved)
    reference.set_memory(moved)
    np.testing.assert_allclose(runtime.memory(), moved)
    np.testing.assert_allclose(runtime.score(x)[0], reference.score(x)[0], rtol=1e-4)
    assert not np.allclose(runtime.score(x)[0], before)
    with pytest.raises(ValueError, match="shape"):
        runtime.set_memory(moved[:-1])
    with pytest.raises(ValueError, match="NaN"):
        runtime.set_memory(np.full_like(moved, np.nan))
    runtime.set_memory(trained)
    np.testing.assert_array_equal(runtime.score(x)[0], before)


def windows_of(frame: pd.DataFrame, sensors: list[str], window: int) -> np.ndarray:
    values = frame[sensors].to_numpy(np.float32)
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1).copy()


@pytest.fixture(scope="module")
def normal_windows(tiny_model_dir: Path) -> np.ndarray:
    bundle = load_bundle(tiny_model_dir)
    frame = generate(days=3, period_seconds=300, seed=21, faults=False)
    return windows_of(frame, bundle.sensors, bundle.window)


def test_every_window_is_counted_and_the_total_drift_is_bounded(
    tiny_model_dir: Path, normal_windows: np.ndarray
) -> None:
    bundle = load_bundle(tiny_model_dir)
    runtime = Runtime.from_bundle(bundle)
    settings = FollowSettings(below=1.0, rate=0.2, max_drift=0.05, warmup=5)
    follower = DriftFollower(runtime, settings)
    # A benign shift of every reading (a recalibrated transmitter): confident windows move slots.
    shifted = normal_windows * np.float32(1.03)
    for start in range(0, len(shifted), 16):
        batch = shifted[start : start + 16]
        result = follower.analyse(batch)
        confident = follower.levels(result) < settings.below
        if confident.any():  # the gate: a kept move never makes its own windows reconstruct worse
            after = runtime.score(batch[confident])[0].mean()
            assert after <= result.scores[confident].mean() * (1 + 1e-5)
    counts = follower.counts
    assert counts.windows_used + counts.windows_refused == len(shifted)
    assert counts.updates + counts.updates_rejected > 0 and counts.windows_used > 0
    drift = follower.drift()
    assert drift["max"] <= settings.max_drift + 1e-9
    relative = np.linalg.norm(runtime.memory() - follower.trained, axis=1) / np.linalg.norm(
        follower.trained, axis=1
    )
    assert relative.max() <= settings.max_drift + 1e-6  # what the C++ engine scores with
    assert counts.slot_moves_capped > 0


def test_windows_near_or_above_the_threshold_never_move_the_memory(
    tiny_model_dir: Path, normal_windows: np.ndarray
) -> None:
    bundle = load_bundle(tiny_model_dir)
    runtime = Runtime.from_bundle(bundle)
    follower = DriftFollower(runtime, FollowSettings(below=0.5, rate=0.5, warmup=1))
    broken = normal_windows.copy()
    broken[:, :, 0] *= 0.3  # the speed sensor reads a third: every window far above the threshold
    result = follower.analyse(broken)
    assert np.all(follower.levels(result) >= 0.5)
    assert follower.counts.windows_refused == len(broken) and follower.counts.windows_used == 0
    assert follower.counts.updates == 0
    np.testing.assert_array_equal(runtime.memory(), follower.trained.astype(np.float32))


def test_stationary_normal_data_leaves_the_memory_close_to_the_trained_one(
    tiny_model_dir: Path, normal_windows: np.ndarray
) -> None:
    """The follower tracks how encodings move from their own baseline, so normal data that does
    not drift moves the memory by little (and scores stay those of the frozen model)."""
    bundle = load_bundle(tiny_model_dir)
    frozen = Runtime.from_bundle(bundle).score(normal_windows)[0]
    follower = DriftFollower(Runtime.from_bundle(bundle), FollowSettings())  # the defaults
    scores = np.concatenate(
        [follower.analyse(normal_windows[i : i + 8]).scores for i in range(0, len(normal_windows), 8)]
    )
    assert follower.drift()["max"] < 0.1 and follower.drift()["mean"] < 0.02
    alarms_frozen = np.mean(frozen / bundle.threshold >= 1)
    alarms_followed = np.mean(scores / bundle.threshold >= 1)
    assert alarms_followed <= alarms_frozen + 0.01


def test_reset_puts_back_the_trained_memory(tiny_model_dir: Path, normal_windows: np.ndarray) -> None:
    bundle = load_bundle(tiny_model_dir)
    runtime = Runtime.from_bundle(bundle)
    frozen = runtime.score(normal_windows)[0].copy()
    follower = DriftFollower(runtime, FollowSettings(below=1.0, rate=0.3, warmup=2))
    for start in range(0, len(normal_windows), 16):
        follower.analyse(normal_windows[start : start + 16] * np.float32(1.02))
    assert follower.counts.updates + follower.counts.updates_rejected > 0
    follower.current = follower.trained * 1.1  # moved, whether or not the gate let moves through
    runtime.set_memory(follower.current.astype(np.float32))
    assert follower.drift()["max"] == pytest.approx(0.1)
    assert not np.array_equal(runtime.score(normal_windows)[0], frozen)
    follower.reset()
    assert follower.drift() == {"max": 0.0, "mean": 0.0}
    assert follower.counts.resets == 1
    np.testing.assert_array_equal(runtime.score(normal_windows)[0], frozen)


@pytest.mark.slow
def test_a_slow_ramp_on_one_sensor_still_alarms_with_drift_following(tiny_model_dir: Path) -> None:
    """The boiling frog: a bearing temperature creeping up over days. Following may absorb the
    first part of the creep, but the bound on total drift and the rule that windows near the
    threshold never teach the memory leave the end of the ramp alarming, as without following."""
    from memae_ts.estimator import load

    frame = generate(days=5, period_seconds=300, seed=31, faults=False)
    n, start = len(frame), len(frame) // 5
    frame["bearing_temp_c"] += np.clip((np.arange(n) - start) / (n - start), 0, None) * 25.0
    tail = slice(n - n // 10, n)
    frozen = load(tiny_model_dir)
    _, frozen_result = frozen.score_rows(frame)
    assert np.mean(frozen_result.is_anomaly[tail]) > 0.9  # the fault is real for the frozen model

    for rate in (0.001, 0.01, 0.05):  # the default, and faster than anyone should follow
        followed = load(tiny_model_dir)
        followed.follow_drift, followed.follow_rate = True, rate
        _, result = followed.score_rows(frame)
        assert followed.drift_ is not None and followed.drift_["counts"]["windows_used"] > 0
        assert followed.drift_["max"] <= followed.follow_max_drift + 1e-9
        assert np.mean(result.is_anomaly[tail]) > 0.9, (rate, followed.drift_)
        before = np.nan_to_num(result.normalised[:start], nan=0.0)
        assert np.mean(before >= 1) <= np.mean(np.nan_to_num(frozen_result.normalised[:start]) >= 1) + 0.01


def test_api_follow_drift_carries_over_between_calls_and_resets(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    from memae_ts.estimator import load

    model = load(tiny_model_dir)
    assert model.drift_ is None
    model.follow_drift, model.follow_rate = True, 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.score_samples(plant_csvs[0])
        first = model.drift_
        assert first is not None
        model.score_samples(plant_csvs[0])
    second = model.drift_
    assert second is not None
    assert second["counts"]["windows_used"] + second["counts"]["windows_refused"] == 2 * (
        first["counts"]["windows_used"] + first["counts"]["windows_refused"]
    )
    model.reset_memory()
    after = model.drift_
    assert after is not None and after["max"] == 0.0 and after["counts"]["resets"] == 1


def test_cli_score_follow_drift_reports_what_it_did(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    command = [sys.executable, "-m", "memae_ts.cli", "score", str(tiny_model_dir), str(plant_csvs[1])]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*command, "--follow-drift", "-o", str(out)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("drift following:"))
    assert "windows updated the memory" in line and "refused" in line and "cap 0.25" in line
    frame = pd.read_csv(out)
    assert frame["score"].notna().sum() > 0


def test_cli_refuses_follow_drift_for_a_streamed_parquet_instead_of_ignoring_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memae_ts.cli import main

    parquet = tmp_path / "live.parquet"
    generate(days=20, period_seconds=300, seed=2).to_parquet(parquet, row_group_size=500)
    code = main(["score", str(tiny_model_dir), str(parquet), "--follow-drift", "--memory-limit", "1MB"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--follow-drift" in err and "--memory-limit" in err
