"""Smoke version of bench/runtime.py: every part of the method on a sliver (one model, tiny pool,
one short round), so the benchmark script itself cannot rot. The real figures come from the
full run in docs/runtime.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from memae_ts import _runtime

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def test_graph_flops_of_the_default_conv_model_match_the_hand_count(tmp_path: Path) -> None:
    from bench import runtime

    bundle = runtime.build_bundle("conv", 1000, tmp_path / "conv")
    flops = runtime.graph_flops(runtime.layer_shapes(bundle))
    # Encoder 8->32 (k5 s2, 64->32), 32->64 (k5 s2, 32->16), 64->32 (k3, 16): 303,104 MACs;
    # memory 16 x 1000 x 32; decoder: transposed 32->64 and 64->32 (every (row, tap) pair
    # lands but the trimmed ones), conv 32->8 (k3, 64).
    assert flops["encoder"] == 2 * (32 * 32 * 8 * 5 + 64 * 16 * 32 * 5 + 32 * 16 * 64 * 3)
    assert flops["similarity"] == 2 * 16 * 1000 * 32
    assert 2.6e6 < sum(flops.values()) < 2.75e6  # the 2.71 MFLOP of issue #18


def test_cycler_hands_out_distinct_windows_until_the_pool_wraps() -> None:
    from bench import runtime

    pool = np.arange(10 * 64 * 8, dtype=np.float32).reshape(10, 64, 8)
    cyc = runtime.Cycler(pool, 3)
    firsts = [float(cyc()[0, 0, 0]) for _ in range(4)]
    assert firsts == [0.0, 3 * 512.0, 6 * 512.0, 0.0]  # 9 of 10 windows used, then from the start


@pytest.mark.slow  # builds a bundle, an ONNX session and two fresh processes (~20 s)
def test_runtime_bench_runs_end_to_end_and_reports_every_figure(tmp_path: Path) -> None:
    from bench import runtime

    out = tmp_path / "runtime.json"
    code = runtime.main(
        [
            "--arch", "conv",
            "--batches", "1", "32",
            "--threads", "1", "2",
            "--rounds", "1",
            "--seconds", "0.02",
            "--pool-mib", "2",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["peak"]["gflops_cpu"] > 0
    rows = {(r["threads"], r["batch"]) for r in result["throughput"]}
    # 2 threads only where the runtime uses them: batch 32 is two chunks, batch 1 is one.
    assert rows == {(1, 1), (1, 32), (2, 32)}
    for r in result["throughput"]:
        assert r["runtime_cpu_us"] > 0 and r["onnxruntime_cpu_us"] > 0
        assert 0 < r["peak_share"] < 1.5
        assert r["max_rel_diff"] < 1e-3
        if _runtime.bf16_supported():  # the bf16 row: measured in the same rounds, error stated
            assert r["runtime_bf16_cpu_us"] > 0 and r["bf16_ratio_cpu"] > 0
            assert 0 < r["bf16_max_rel_diff"] < 0.1
    stage = result["stages"][0]
    assert all(stage[k] > 0 for k in runtime.STAGES)


def test_real_window_pool_is_distinct_demo_windows_in_the_bundle_sensor_order(tmp_path: Path) -> None:
    from bench import runtime

    bundle = tmp_path / "b"
    bundle.mkdir()
    sensors = ["winding_temp_c", "motor_speed_rpm", "flow_m3h", "discharge_pressure_bar",
               "suction_pressure_bar", "motor_current_a", "vibration_mm_s", "bearing_temp_c"]  # fmt: skip
    (bundle / "config.json").write_text(json.dumps({"sensors": sensors}))
    pool = runtime.real_window_pool(bundle, mib=3.0)
    assert pool.shape == (3 * 2**20 // (64 * 8 * 4), 64, 8) and pool.dtype == np.float32
    assert pool.flags.c_contiguous and np.isfinite(pool).all()
    # Window i+1 is window i moved on by one row, and the first column is the winding temperature.
    assert np.array_equal(pool[1, :-1], pool[0, 1:])
    assert 20.0 < float(np.median(pool[:, :, 0])) < 120.0 and float(np.median(pool[:, :, 1])) > 500.0


@pytest.mark.slow  # fits a one-epoch model on one demo day (~15 s)
def test_trained_bundle_is_fitted_once_then_reused_and_keeps_few_slots(tmp_path: Path) -> None:
    from bench import runtime
    from memae_ts.engines.runtime import Runtime

    first = runtime.trained_bundle(tmp_path, epochs=1, days=1)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert runtime.trained_bundle(tmp_path, epochs=1, days=1) == first  # cached, not refitted
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent.name == "conv-trained-e1-d1"  # keyed by the fit, never another fit's bundle
    flops = runtime.graph_flops(runtime.layer_shapes(first))
    assert 2.6e6 < sum(flops.values()) < 2.75e6  # the bench shapes: same FLOPs as the untrained bundle
    kept = runtime.slots_kept(Runtime.load(first), runtime.real_window_pool(first, mib=0.5)[:64])
    assert kept["slots"] == 1000
    assert 1 <= kept["median"] <= kept["p90"] <= kept["max"] < 1000
