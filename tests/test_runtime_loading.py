"""The C++ loader refuses every kind of broken bundle with a clear BundleError, never a crash."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_bundles import edited, random_bundle, random_windows, stamped, write_bundle
from safetensors.numpy import save

from memae_ts import _runtime
from memae_ts.engines.runtime import Runtime
from memae_ts.errors import BundleError


@pytest.fixture(scope="module")
def good() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return random_bundle("conv", channels=(8, 16), latent=8, slots=40, seed=3)


def load_bytes(config: dict[str, Any] | bytes, tensors: bytes) -> Runtime:
    return Runtime.from_bytes(stamped(config, tensors), tensors)


def test_good_bundle_loads_from_dir_and_bytes(tmp_path: Path, good) -> None:
    config, weights = good
    path = write_bundle(tmp_path / "ok", config, weights)
    from_dir = Runtime.load(path)
    from_mem = load_bytes(config, save(weights))
    assert from_dir.sensors == config["sensors"] and from_dir.window == 64
    assert from_dir.threshold == pytest.approx(0.75)
    x = random_windows(config, 5)
    np.testing.assert_array_equal(from_dir.score(x)[0], from_mem.score(x)[0])


def test_missing_directory_or_files(tmp_path: Path, good) -> None:
    with pytest.raises(BundleError, match="not found"):
        Runtime.load(tmp_path / "nope")
    config, weights = good
    path = write_bundle(tmp_path / "b", config, weights)
    (path / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"cannot open model\.safetensors"):
        Runtime.load(path)


@pytest.mark.parametrize("keep", [0, 5, 8, 9, 100, -1])
def test_truncated_weights_are_refused(good, keep: int) -> None:
    config, weights = good
    blob = save(weights)
    cut = blob[: keep if keep >= 0 else len(blob) - 1]
    with pytest.raises(BundleError, match=r"truncated|corrupt|invalid JSON"):
        load_bytes(config, cut)


def test_every_truncation_point_is_refused_cleanly(good) -> None:
    """Cut the file at many points: each one is a BundleError, none crashes or reads past the end."""
    config, weights = good
    blob = save(weights)
    for keep in range(0, len(blob), max(1, len(blob) // 400)):
        with pytest.raises(BundleError):
            load_bytes(config, blob[:keep])


def test_header_claiming_more_than_the_file_is_refused(good) -> None:
    config, weights = good
    blob = bytearray(save(weights))
    blob[:8] = struct.pack("<Q", 2**63)
    with pytest.raises(BundleError, match=r"truncated or corrupt"):
        load_bytes(config, bytes(blob))


def test_offsets_outside_the_data_are_refused(good) -> None:
    config, weights = good
    blob = save(weights)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 10**9, end + 10**9]
    raw = json.dumps(header).encode()
    with pytest.raises(BundleError, match="outside the file"):
        load_bytes(config, struct.pack("<Q", len(raw)) + raw + blob[8 + n :])


def test_corrupt_header_json_is_refused(good) -> None:
    config, weights = good
    blob = bytearray(save(weights))
    blob[8:12] = b"\x00\xff{["
    with pytest.raises(BundleError, match="invalid JSON"):
        load_bytes(config, bytes(blob))


def test_wrong_dtype_is_refused(good) -> None:
    config, weights = good
    bad = dict(weights)
    bad["memory.weight"] = weights["memory.weight"].astype(np.float64)
    with pytest.raises(BundleError, match="dtype F64, expected F32"):
        load_bytes(config, save(bad))


def test_wrong_shape_is_refused(good) -> None:
    config, weights = good
    bad = dict(weights)
    bad["memory.weight"] = np.zeros((40, 9), np.float32)
    with pytest.raises(
        BundleError, match=r"memory.weight' \(network.memory.weight\) has shape \(40, 9\), expected \(40, 8\)"
    ):
        load_bytes(config, save(bad))
    bad = dict(weights)
    bad["encoder.0.weight"] = np.zeros((8, 7, 5), np.float32)
    with pytest.raises(BundleError, match="encoder\\[0\\] expects 7 input channels"):
        load_bytes(config, save(bad))


def test_missing_tensor_is_refused(good) -> None:
    config, weights = good
    bad = {k: v for k, v in weights.items() if k != "decoder.out.bias"}
    with pytest.raises(BundleError, match=r"decoder\.out\.bias.*missing"):
        load_bytes(config, save(bad))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(good, value: float) -> None:
    config, weights = good
    bad = {k: v.copy() for k, v in weights.items()}
    bad["encoder.latent.weight"].flat[7] = value
    with pytest.raises(BundleError, match=r"encoder\.latent\.weight' contains NaN or Inf"):
        load_bytes(config, save(bad))


def test_newer_format_version_is_refused(tmp_path: Path, good) -> None:
    config, weights = good
    newer = dict(config, format_version=4)
    path = write_bundle(tmp_path / "newer", newer, weights)
    with pytest.raises(BundleError, match="format_version 4 is newer than this runtime supports \\(3\\)"):
        Runtime.load(path)
    assert _runtime.FORMAT_VERSION == 2  # what a `mean` bundle is written as
    assert _runtime.MAX_FORMAT_VERSION == 3  # a bundle with a non-mean "scoring" section


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["format"], "something-else", "expected 'memae-ts-bundle'"),
        (["format_version"], 1.5, "format_version must be an integer"),
        (["window"], 65, "disagree"),
        (["sensors"], [], "sensors must list"),
        (["scaler", "scale"], [1.0] * 7, "one value per sensor"),
        (["scaler", "scale", 3], 0.0, r"scale\[3\] is 0, outside \[1e-12, 1e12\]"),
        (["threshold"], None, "threshold must be an object"),
        (["network", "kind"], "rnn", "'rnn' is not 'conv' or 'mlp'"),
        (["network", "encoder", 0, "op"], "conv2d", "unknown op 'conv2d'"),
        (["network", "encoder", 0, "stride"], 0, "stride must be an integer"),
        (["network", "encoder", 0, "padding"], 500, "longer than|does not match"),
        (["network", "decoder", 0, "output_padding"], 2, "output_padding must be smaller than stride"),
        (["network", "memory", "temperature"], 0.0, r"temperature must be in \[1e-04, 10000\], got 0"),
        (["network", "memory", "shrink_threshold"], 1.5, "shrink_threshold must be in"),
        (["network", "memory", "addressing"], "l2", "addressing must be"),
        (["network", "memory", "slots"], 41, r"expected \(41, 8\)"),
        (["network", "memory", "dim"], 9, "does not match the encoder output"),
    ],
)
def test_inconsistent_config_is_refused(good, path: list[Any], value: Any, message: str) -> None:
    config, weights = good
    with pytest.raises(BundleError, match=message):
        load_bytes(edited(config, path, value), save(weights))


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"format": "memae-ts-bundle",}',
        b"[1, 2",
        b'{"a": NaN}',
        b'{"a": "\\ud800"}',
        b"\xff\xfe",
        b"[" * 100 + b"]" * 100,
    ],
)
def test_malformed_config_json_is_refused(good, text: bytes) -> None:
    _, weights = good
    with pytest.raises(BundleError, match=r"invalid JSON|must be an object"):
        load_bytes(text, save(weights))


def test_random_byte_flips_never_crash(good) -> None:
    """A cheap in-process fuzz: flip bytes of both files; every outcome is a load or a BundleError."""
    config, weights = good
    cfg = json.dumps(config).encode()
    blob = save(weights)
    rng = np.random.default_rng(0)
    x = random_windows(config, 2)
    for _ in range(300):
        c, t = bytearray(cfg), bytearray(blob)
        for target in (c, t):
            for i in rng.integers(0, len(target), size=rng.integers(1, 4)):
                target[i] = int(rng.integers(0, 256))
        try:
            runtime = load_bytes(bytes(c), bytes(t))
        except BundleError:
            continue
        try:  # loaded despite the flips (e.g. a flipped weight): it must still score or refuse
            runtime.score(x)
        except ValueError:
            pass


def test_atheris_fuzz_target_runs_clean(tmp_path: Path) -> None:
    """A short atheris run of tests/fuzz_runtime_loader.py (seeded with a valid bundle).

    Linux carries a process's peak RSS across fork and exec, so the child starts with the
    pytest process's peak (2.1 GB late in a CI run, past libFuzzer's default 2 GB limit, which
    then reported an out-of-memory on a 4-byte input). The limit is the inherited peak plus
    the default 2 GB, and the test runs the target beside 2.2 GB of resident ballast, so a
    target run under the bare default limit fails here, not only late in a full suite.
    """
    pytest.importorskip("atheris")
    import resource
    import subprocess
    import sys

    ballast = np.ones(2_200_000_000 // 8)  # resident: every page written
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    target = Path(__file__).resolve().parent / "fuzz_runtime_loader.py"
    out = subprocess.run(
        [
            sys.executable,
            str(target),
            "-runs=20000",
            "-seed=7",
            f"-rss_limit_mb={inherited_mb + 2048}",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    del ballast
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 20000 runs" in out.stderr
