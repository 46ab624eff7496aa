"""The runtime and the ONNX export from the command line: `export` and `score --engine`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.cli import main
from memae_ts.engines import load_engine
from memae_ts.engines.bundle import load_bundle
from memae_ts.engines.runtime import Runtime


def test_export_writes_a_checked_onnx_model_with_dynamic_batch(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "deploy" / "model.onnx"
    assert main(["export", str(tiny_model_dir), "--onnx", str(out)]) == 0
    assert "opset 18" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    bundle = load_bundle(tiny_model_dir)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    runtime = Runtime.load(tiny_model_dir)
    rng = np.random.default_rng(3)
    for batch in (1, 5):
        x = bundle.scaler.center + bundle.scaler.scale * rng.standard_normal(
            (batch, bundle.window, len(bundle.sensors))
        )
        x = x.astype(np.float32)
        scores, contributions = session.run(["scores", "contributions"], {"windows": x})
        np.testing.assert_allclose(scores, runtime.score(x)[0], rtol=1e-4)
        np.testing.assert_allclose(contributions, runtime.score(x)[1], rtol=1e-4)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["sensors"].split(",") == bundle.sensors


def test_export_of_a_missing_bundle_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_engines_registry_builds_runtime_and_onnx(tiny_model_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    runtime = load_engine(tiny_model_dir, "runtime")
    onnx_engine = load_engine(tiny_model_dir, "onnx")
    assert (runtime.name, onnx_engine.name) == ("runtime", "onnx")
    assert load_engine(tiny_model_dir).name == "runtime"  # auto prefers the C++ runtime
    assert runtime.bundle.sensors == onnx_engine.bundle.sensors


@pytest.mark.parametrize("engine", ["runtime", "onnx"])
def test_score_command_agrees_with_the_numpy_engine(
    engine: str, tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    if engine == "onnx":
        pytest.importorskip("onnxruntime")
    live = plant_csvs[1]
    outputs = {}
    for name in ("numpy", engine):
        out = tmp_path / f"{name}.csv"
        assert main(["score", str(tiny_model_dir), str(live), "-o", str(out), "--engine", name]) == 0
        outputs[name] = pd.read_csv(out)
    want, got = outputs["numpy"], outputs[engine]
    assert list(got.columns) == list(want.columns)
    assert got["score"].notna().sum() > 100
    inexact = ("mode", "novelty_score", "tail_probability")
    numeric = [c for c in want.select_dtypes("number").columns if c not in inexact]
    # The CSV keeps 6 significant digits, so compare at that precision.
    np.testing.assert_allclose(
        got[numeric].to_numpy(float), want[numeric].to_numpy(float), rtol=2e-5, atol=1e-9
    )
    # A tail probability magnifies a score's last-digit difference by the tail's slope.
    np.testing.assert_allclose(got["tail_probability"], want["tail_probability"], rtol=2e-4, atol=1e-9)
    if "mode" in got.columns:  # memae_ts.detection.modes: 1 - cos near 0 magnifies float32 rounding
        np.testing.assert_allclose(got["novelty_score"], want["novelty_score"], rtol=1e-4, atol=1e-4)
        assert (got["mode"].fillna(-1) == want["mode"].fillna(-1)).mean() > 0.99
