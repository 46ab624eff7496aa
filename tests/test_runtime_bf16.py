"""Optional bf16 convolutions in the C++ runtime (`precision="bf16"` / MEMAE_TS_PRECISION).

The convolution GEMMs round both operands to bf16 and accumulate in FP32 (`vdpbf16ps`); the
memory addressing and the score stay FP32. The bound on the score error against FP32 stated in
docs/runtime.md is checked here on trained models: the demo plant and SKAB-like data (eight
pump-rig signals at 1 Hz, two valve faults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts import _runtime
from memae_ts.engines import load_engine
from memae_ts.engines.runtime import Runtime
from memae_ts.errors import DataError, MemaeError

# The bounds against FP32 on trained models (docs/runtime.md, "bf16 convolutions"): measured
# median 2-4e-4 and 99th percentile 1-5e-3 on these two small models, median 7.7e-3 and max
# 2.5e-2 on the default model of the demo plant (bench/bf16_parity.py).
MEDIAN_REL_ERROR = 1e-2
P99_REL_ERROR = 3e-2
NEAR_LINE_REL_ERROR = 3e-2  # windows at or above half the threshold: decisions move < 3 %
MAX_REL_ERROR = 0.1  # random networks: large errors, all of them tiny relative ones

needs_bf16 = pytest.mark.skipif(not _runtime.bf16_supported(), reason="this CPU has no AVX512_BF16")


def test_precision_is_checked_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, weights = random_bundle("mlp", seed=2, window=8, n_sensors=3, hidden=(8,), latent=4, slots=10)
    mlp = write_bundle(tmp_path / "mlp", config, weights)
    conv = write_bundle(tmp_path / "conv", *random_bundle("conv", seed=2, window=16, n_sensors=3, slots=10))
    with pytest.raises(DataError, match="precision must be one of fp32, bf16, got 'fp16'"):
        Runtime.load(conv, precision="fp16")
    monkeypatch.setenv("MEMAE_TS_PRECISION", "half")
    with pytest.raises(DataError, match="MEMAE_TS_PRECISION must be one of fp32, bf16, got 'half'"):
        Runtime.load(conv)
    monkeypatch.setenv("MEMAE_TS_PRECISION", "bf16")
    with pytest.raises(
        MemaeError, match=r"precision 'bf16' is an option of the C\+\+ runtime, not of --engine numpy"
    ):
        load_engine(conv, engine="numpy", precision="bf16")
    if not _runtime.bf16_supported():
        with pytest.raises(DataError, match="needs a CPU with AVX512_BF16"):
            Runtime.load(conv)
        return
    with pytest.raises(DataError, match="applies to convolutions, and this mlp model has none"):
        Runtime.load(mlp)
    assert load_engine(conv).precision == "bf16"  # the environment variable
    monkeypatch.delenv("MEMAE_TS_PRECISION")
    assert Runtime.load(conv).precision == "fp32"


@needs_bf16
def test_bf16_changes_only_the_convolutions(tmp_path: Path) -> None:
    """Same bundle, same windows: bf16 scores differ from FP32 (the path runs) but little on a
    random network, batch 1 equals the same window in a batch, and FP32 is untouched."""
    config, weights = random_bundle("conv", seed=4, n_sensors=6, window=40, channels=(12, 20), slots=60)
    path = write_bundle(tmp_path / "conv", config, weights)
    fp32, bf16 = Runtime.load(path), Runtime.load(path, precision="bf16")
    x = random_windows(config, 50, seed=5)
    a, b = fp32.score(x)[0].astype(np.float64), bf16.score(x)[0].astype(np.float64)
    rel = np.abs(b - a) / a
    assert 0 < rel.max() < MAX_REL_ERROR
    np.testing.assert_allclose(bf16.score(x[7:8])[0], b[7:8], rtol=1e-6)
    for threads in (1, 2):
        np.testing.assert_allclose(Runtime.load(path, threads, "bf16").score(x)[0], b, rtol=1e-6)
    np.testing.assert_array_equal(Runtime.load(path).score(x)[0], a.astype(np.float32))


def skab_like(seed: int, rows: int, faults: bool) -> pd.DataFrame:
    """Eight signals of a pump rig at 1 Hz (SKAB's columns and rough levels): vibration RMS,
    current, pressure, temperatures, voltage and flow, with noise, slow thermal drift and, with
    `faults`, a valve closing (flow down, pressure up) and a vibration burst."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=float)
    cycle = np.sin(2 * np.pi * t / 120.0)
    frame = pd.DataFrame(
        {
            "datetime": pd.date_range("2020-02-08 13:30:47", periods=rows, freq="1s").strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "Accelerometer1RMS": 0.21 + 0.01 * cycle + rng.normal(0, 0.004, rows),
            "Accelerometer2RMS": 0.27 + 0.01 * cycle + rng.normal(0, 0.005, rows),
            "Current": 2.1 + 0.3 * cycle + rng.normal(0, 0.08, rows),
            "Pressure": 0.3 * cycle + rng.normal(0, 0.2, rows),
            "Temperature": 89 + 2 * t / rows + rng.normal(0, 0.05, rows),
            "Thermocouple": 27 + 0.5 * t / rows + rng.normal(0, 0.02, rows),
            "Voltage": 230 + 6 * cycle + rng.normal(0, 3, rows),
            "Volume Flow RateRMS": 123 + 2 * cycle + rng.normal(0, 0.4, rows),
        }
    )
    if faults:
        frame.loc[rows // 3 : rows // 3 + 200, "Volume Flow RateRMS"] -= 12
        frame.loc[rows // 3 : rows // 3 + 200, "Pressure"] += 0.8
        frame.loc[2 * rows // 3 : 2 * rows // 3 + 100, "Accelerometer1RMS"] *= 1.3
    return frame


@needs_bf16
@pytest.mark.parametrize("data", ["demo plant", "SKAB-like"])
def test_bf16_score_error_on_trained_models_is_within_the_stated_bound(
    data: str, plant_csvs: tuple[Path, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from memae_ts import MemAE
    from memae_ts.estimator import load

    if data == "demo plant":
        model_dir, live = tiny_model_dir, plant_csvs[1]
    else:
        skab_like(1, 3000, False).to_csv(tmp_path / "train.csv", index=False)
        skab_like(2, 1500, True).to_csv(tmp_path / "live.csv", index=False)
        params = {
            "window": 32,
            "channels": (16, 32),
            "latent": 16,
            "memory_slots": 50,
            "epochs": 4,
            "seed": 0,
        }
        MemAE(**params).fit(tmp_path / "train.csv").save(tmp_path / "model")
        model_dir, live = tmp_path / "model", tmp_path / "live.csv"
    model = load(model_dir, engine="runtime")
    fp32 = model.score_samples(live)
    model.engine_ = Runtime.from_bundle(model.bundle_, precision="bf16")
    bf16 = model.score_samples(live)
    ok = np.isfinite(fp32)
    assert ok.sum() > 500 and np.array_equal(ok, np.isfinite(bf16))
    rel = np.abs(bf16[ok] - fp32[ok]) / fp32[ok]
    assert np.median(rel) < MEDIAN_REL_ERROR, np.median(rel)
    assert np.quantile(rel, 0.99) < P99_REL_ERROR, np.quantile(rel, 0.99)
    near = fp32[ok] >= 0.5 * model.threshold_
    assert near.sum() > 20 and rel[near].max() < NEAR_LINE_REL_ERROR, rel[near].max()
    assert rel.max() > 0  # bf16 did run
