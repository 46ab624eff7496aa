"""Trained bundles scored by the cross-built runtime under qemu (aarch64: NEON kernels; armhf:
32-bit ARM, scalar kernels) give the x86 scores. scripts/run-ctest.sh builds the binaries
(build/ctest-aarch64, build/ctest-armhf) before pytest runs in `make test`."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from runtime_bundles import random_windows

from memae_ts.engines.bundle import load_bundle
from memae_ts.engines.engine_numpy import NumpyEngine
from memae_ts.engines.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [
    ("aarch64", "qemu-aarch64", "/usr/aarch64-linux-gnu", "neon_"),
    ("armhf", "qemu-arm", "/usr/arm-linux-gnueabihf", "scalar_"),
]


def _scorer(arch: str, qemu: str) -> Path:
    binary = ROOT / "build" / f"ctest-{arch}" / "memae_score"
    if binary.is_file() and shutil.which(qemu):
        return binary
    if os.environ.get("CI") == "true" and platform.machine() == "x86_64":
        pytest.fail(f"{binary} or {qemu} is missing: scripts/run-ctest.sh builds it (make ctest)")
    pytest.skip(f"{binary} or {qemu} is missing (make ctest builds it)")


@pytest.mark.parametrize(("arch", "qemu", "sysroot", "isa"), TARGETS, ids=[t[0] for t in TARGETS])
@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_cross_built_runtime_scores_trained_bundles_like_x86(
    arch: str,
    qemu: str,
    sysroot: str,
    isa: str,
    kind: str,
    tiny_model_dir: Path,
    tiny_mlp_model_dir: Path,
    tmp_path: Path,
) -> None:
    scorer = _scorer(arch, qemu)
    path = tiny_model_dir if kind == "conv" else tiny_mlp_model_dir
    bundle = load_bundle(path)
    x = random_windows(bundle.config, 37, seed=11)  # more than two chunks, odd tail
    x.tofile(tmp_path / "x.f32")
    result = subprocess.run(
        [qemu, "-L", sysroot, str(scorer), str(path), str(tmp_path / "x.f32"), str(tmp_path / "s.f32")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(isa), result.stdout  # the kernels that really ran
    arm = np.fromfile(tmp_path / "s.f32", dtype=np.float32)
    x86 = Runtime.load(path).score(x)[0]
    reference = NumpyEngine(bundle).score(x)[0]
    np.testing.assert_allclose(arm, x86, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(arm, reference, rtol=1e-3, atol=1e-6)
