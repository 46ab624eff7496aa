"""Differential check on what the fuzzers produced: for every input of the loader fuzz corpus
(the seeds of every architecture, plus what libFuzzer kept in build/fuzz-corpus, see
scripts/run-ctest.sh), the C++ loader and the Python reader accept or refuse it alike, and every
bundle they accept scores the same in the C++ runtime and the numpy reference engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from runtime_bundles import split_fuzz_input

from memae_ts.engines.bundle import decode_bundle
from memae_ts.engines.engine_numpy import NumpyEngine
from memae_ts.engines.runtime import Runtime
from memae_ts.errors import BundleError

ROOT = Path(__file__).resolve().parent.parent
MAX_INPUTS = 4000


def _inputs(tmp_path: Path) -> list[Path]:
    seeder = ROOT / "build" / "ctest-release" / "fuzz_loader"
    if not seeder.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{seeder} is missing: scripts/run-ctest.sh builds it (make ctest)")
        pytest.skip(f"{seeder} is missing (make ctest builds it)")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    subprocess.run([str(seeder), "--write-seeds", str(seeds)], check=True, capture_output=True, timeout=60)
    files = sorted(seeds.iterdir())
    corpus = ROOT / "build" / "fuzz-corpus" / "fuzz_loader"
    if corpus.is_dir():
        found = sorted(corpus.iterdir())
        step = max(1, len(found) // MAX_INPUTS)
        files += found[::step]
    return files


def _windows(runtime: Runtime, count: int) -> np.ndarray:
    center = np.asarray(
        runtime._model.sensors and runtime.bundle.config["scaler"]["center"], dtype=np.float64
    )
    scale = np.asarray(runtime.bundle.config["scaler"]["scale"], dtype=np.float64)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((count, runtime.window, len(runtime.sensors)))
    return (center + scale * z).astype(np.float32)


def test_cpp_and_python_readers_and_engines_agree_on_every_fuzz_input(tmp_path: Path) -> None:
    files = _inputs(tmp_path)
    accepted = compared = 0
    for path in files:
        config, tensors = split_fuzz_input(path.read_bytes())
        try:
            runtime = Runtime.from_bytes(config, tensors)
            cpp_error = None
        except BundleError as exc:
            cpp_error = str(exc)
        try:
            bundle = decode_bundle(config, tensors)
            py_error = None
        except BundleError as exc:
            py_error = str(exc)
        if py_error is not None and cpp_error is None and ("resample" in py_error or "reading" in py_error):
            continue  # sections only the Python data path reads (docs/bundle-format.md)
        assert (cpp_error is None) == (py_error is None), (
            f"{path.name}: C++ {cpp_error!r}, Python {py_error!r}"
        )
        if cpp_error is not None:
            continue
        accepted += 1
        assert runtime.model_version == bundle.model_version
        if runtime.window * len(runtime.sensors) > 4096:
            continue
        runtime._bundle = bundle
        x = _windows(runtime, 3)
        reference = NumpyEngine(bundle)
        got, want = runtime.score(x)[0].astype(np.float64), reference.score(x)[0]
        same_slots = np.ones(len(x), dtype=bool)
        if bundle.config["network"]["memory"] is not None:
            # Shrinkage is discontinuous at its threshold: compare the windows whose addressing
            # kept the same slots in float32 and float64.
            a = runtime.attention(x) > 0
            b = np.asarray(reference.attention(x)) > 0
            same_slots = (a == b.reshape(a.shape)).reshape(len(x), -1).all(axis=1)
        ok = same_slots & np.isfinite(want) & (np.abs(want) < 1e30)
        compared += int(ok.sum())
        np.testing.assert_allclose(got[ok], want[ok], rtol=2e-3, atol=1e-5, err_msg=path.name)
    print(f"{len(files)} inputs, {accepted} accepted by both readers, {compared} windows compared")
    assert accepted >= 20 and compared >= 40, (len(files), accepted, compared)
