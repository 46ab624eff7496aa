"""The wheel of `make wheel` installs into a clean virtualenv without a compiler and scores with
the C++ runtime (issue #16.1).

The wheel is built by scripts/build-wheel.sh (what `make wheel` runs) and cached under
build/wheel-test/<hash of the sources that go into it>, so only a change to the package or the
C++ rebuilds it (about a minute). The clean venv gets the wheel and the base dependencies only,
from a local folder (`--no-index`), at the versions of the dev venv (downloaded once through
pip's cache); its PATH holds nothing but its own bin/, so no CMake or compiler can be found.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "wheel-test"
BASE_DEPENDENCIES = ("numpy", "pandas", "pyarrow", "safetensors")
PACKAGED = (
    "pyproject.toml",
    "CMakeLists.txt",
    "cpp",
    "memae_ts",
    "edge",
    "connectors",
    "scripts/build-wheel.sh",
)


def _source_hash() -> str:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *PACKAGED],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    digest = hashlib.sha256()
    for name in sorted(n for n in listed if n):
        path = REPO / os.fsdecode(name)
        if path.is_file():
            digest.update(name + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel() -> Path:
    out = CACHE / _source_hash()
    found = sorted(out.glob("memae_ts-*manylinux*.whl"))
    if not found:
        done = _run(
            ["bash", "scripts/build-wheel.sh", str(out)], cwd=REPO, env={**os.environ, "PY": sys.executable}
        )
        assert done.returncode == 0, done.stdout + done.stderr
        found = sorted(out.glob("memae_ts-*manylinux*.whl"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    deps = CACHE / "deps"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in BASE_DEPENDENCIES]
    if not all(any(deps.glob(f"{pin.split('==')[0]}-{pin.split('==')[1]}-*.whl")) for pin in pins):
        got = _run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", str(deps), *pins])
        assert got.returncode == 0, got.stderr
    venv = tmp_path_factory.mktemp("clean") / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    installed = _run(
        [*pip, "install", "--no-index", "--find-links", str(deps), str(wheel)], env=_clean_env(venv)
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    """Only the venv's bin/ on PATH: no cmake, no c++, no compiler of any name."""
    env = {"PATH": str(venv / "bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    for tool in ("cmake", "c++", "g++", "gcc", "cc", "clang"):
        assert shutil.which(tool, path=env["PATH"]) is None, tool
    return env


def _in_venv(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(list(args), cwd=cwd, env=_clean_env(venv))


def test_wheel_is_manylinux_typed_and_has_the_extension(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "-manylinux_" in wheel.name
    assert any(n.startswith("memae_ts/_runtime.") and n.endswith(".so") for n in names)
    assert "memae_ts/py.typed" in names  # PEP 561: type checkers use the package's annotations
    assert not any(n.startswith(("tests/", "bench/", "cpp/")) for n in names)


def test_clean_venv_scores_with_the_cpp_runtime(
    clean_venv: Path, tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    done = _in_venv(
        clean_venv,
        tmp_path,
        str(clean_venv / "bin" / "memae-ts"),
        "score",
        str(tiny_model_dir),
        str(plant_csvs[1]),
        "--engine",
        "runtime",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "runtime engine" in done.stderr
    scores = pd.read_csv(out)["score"].to_numpy()
    # The same numbers as the dev install's C++ runtime.
    from memae_ts import load

    expected = load(tiny_model_dir, engine="runtime").score_samples(plant_csvs[1])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, equal_nan=True)
    # Nothing of training came along.
    no_torch = _in_venv(clean_venv, tmp_path, str(clean_venv / "bin" / "python"), "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr


def test_edge_without_its_extra_says_which_extra(clean_venv: Path, wheel: Path, tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('[kafka]\nbrokers = "127.0.0.1:9"\n')
    done = _in_venv(
        clean_venv, tmp_path, str(clean_venv / "bin" / "memae-ts"), "edge", "--config", str(config), "--check"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'memae-ts[edge]'" in lines[0], done.stderr
    package = "memae_ts.edge" if "memae_ts/edge/__init__.py" in zipfile.ZipFile(wheel).namelist() else "edge"
    code = f"import {package}.daemon"
    failed = _in_venv(clean_venv, tmp_path, str(clean_venv / "bin" / "python"), "-c", code)
    assert failed.returncode == 1 and "MissingExtraError" in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].endswith("pip install 'memae-ts[edge]'")


def test_wheel_installs_no_generic_top_level_package(clean_venv: Path, tmp_path: Path) -> None:
    """PyPI has projects named `edge` and `connectors`: the wheel must not install either."""
    python = str(clean_venv / "bin" / "python")
    for name in ("edge", "connectors"):
        done = _in_venv(clean_venv, tmp_path, python, "-c", f"import {name}")
        assert done.returncode == 1 and f"No module named '{name}'" in done.stderr
    done = _in_venv(clean_venv, tmp_path, python, "-c", "import memae_ts.edge, memae_ts.connectors")
    assert done.returncode == 0, done.stderr
