"""Training at plant scale: bounded epochs and held-out sample, determinism, and several
processes under torchrun (DistributedDataParallel with gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from memae_ts import estimator as estimator_module  # noqa: E402
from memae_ts.estimator import MemAE, load  # noqa: E402
from memae_ts.evaluation.metrics import evaluate  # noqa: E402

SMALL = {"window": 16, "channels": (8, 16), "latent": 8, "memory_slots": 20, "batch_size": 32, "seed": 3}


def test_same_seed_same_bundle_also_with_sampled_epochs(plant_csvs: tuple[Path, Path]) -> None:
    for params in ({"epochs": 3}, {"epochs": 3, "steps_per_epoch": 5}):
        first = MemAE(**SMALL, **params).fit(plant_csvs[0])
        second = MemAE(**SMALL, **params).fit(plant_csvs[0])
        assert first.bundle_.config["model_id"] == second.bundle_.config["model_id"]
        for name, array in first.bundle_.weights.items():
            np.testing.assert_array_equal(array, second.bundle_.weights[name])
    other_seed = MemAE(**{**SMALL, "seed": 4}, epochs=3).fit(plant_csvs[0])
    assert other_seed.bundle_.config["model_id"] != first.bundle_.config["model_id"]


def test_an_epoch_is_bounded_and_so_is_the_held_out_sample(
    plant_csvs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MemAE(**SMALL, epochs=2, steps_per_epoch=4).fit(plant_csvs[0])
    training = model.bundle_.config["training"]
    assert training["steps_per_epoch"] == 4
    full = training["n_train_windows"]
    assert full > 4 * SMALL["batch_size"]  # the epoch saw a sample, not every window
    monkeypatch.setattr(estimator_module, "MAX_VALIDATION_WINDOWS", 100)
    monkeypatch.setattr(estimator_module, "MAX_EPOCH_WINDOWS", 320)
    bounded = MemAE(**SMALL, epochs=1).fit(plant_csvs[0])
    assert bounded.bundle_.config["training"]["n_val_windows"] == 100
    assert bounded.bundle_.config["training"]["steps_per_epoch"] == 10
    with pytest.raises(ValueError, match="steps_per_epoch must be positive"):
        MemAE(**SMALL, steps_per_epoch=0).fit(plant_csvs[0])


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one(plant_csvs: tuple[Path, Path], tmp_path: Path) -> None:
    history, live = plant_csvs
    args = ["--window", "16", "--channels", "8", "16", "--latent", "8", "--memory-slots", "20"]
    args += ["--batch-size", "32", "--epochs", "10", "--seed", "3", "-q"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MEMAE_TS_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    ddp = subprocess.run(
        [*launcher, "-m", "memae_ts.cli", "fit", str(history), "-o", str(tmp_path / "ddp"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("model written to") == 1  # rank 0 alone writes and reports
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["training"]["world_size"] == 2
    single = MemAE(**SMALL, epochs=10).fit(history)
    labels = np.loadtxt(live, delimiter=",", skiprows=1, usecols=-1)
    two = load(tmp_path / "ddp", engine="numpy")
    auc_two = evaluate(labels, two.score_samples(live), two.threshold_)["roc_auc"]
    auc_one = evaluate(labels, single.score_samples(live), single.threshold_)["roc_auc"]
    # Stated tolerance: the two-process fit sees each window once per epoch as well, in a
    # different order and with half-size steps on each rank, so weights differ but quality holds.
    assert auc_two > 0.7 and abs(auc_two - auc_one) < 0.08, (auc_two, auc_one)


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 64 KB file system (tmpfs), so a disk-full is the kernel's, not a mock's."""
    mount = tmp_path / "full"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_while_writing_the_bundle_is_one_line_and_leaves_nothing(
    plant_csvs: tuple[Path, Path], tiny_disk: Path
) -> None:
    # 2000 slots × 16 floats is 128 KB of weights: more than the 64 KB disk holds
    args = ["--window", "16", "--latent", "16", "--memory-slots", "2000", "--epochs", "1", "-q"]
    args += ["-o", str(tiny_disk / "model")]
    result = subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "fit", str(plant_csvs[0]), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "No space left on device" in error[0] and str(tiny_disk / "model") in error[0]
    assert list(tiny_disk.iterdir()) == []  # no half-written bundle, no staging directory
