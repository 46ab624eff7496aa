"""Bundle integrity: the id ties config.json to model.safetensors, every engine checks it on every
load, saving replaces a bundle in one rename, and both readers refuse the same crafted files."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_bundles import edited, random_bundle, restamp, stamped, write_bundle
from safetensors.numpy import save

from memae_ts import _runtime
from memae_ts.engines import load_engine
from memae_ts.engines.bundle import Limits, bundle_id, load_bundle, make_bundle, read_json, save_bundle, stamp
from memae_ts.engines.runtime import Runtime
from memae_ts.errors import BundleError

ENGINES = ["runtime", "numpy", "onnx"]  # torch too where the bundle comes from the trainer


def _small(seed: int, threshold: float = 0.75) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config, weights = random_bundle(
        "conv", channels=(4, 8), latent=4, slots=12, window=16, n_sensors=3, seed=seed
    )
    config["threshold"]["value"] = threshold
    return config, weights


def _load_everywhere(path: Path, engines: list[str] = ENGINES) -> list[str]:
    """Error messages of every engine (and the C++ loader directly); [] when all load."""
    errors = []
    for engine in engines:
        try:
            load_engine(path, engine=engine)
        except BundleError as exc:
            errors.append(str(exc))
    try:
        Runtime.load(path)
    except BundleError as exc:
        errors.append(str(exc))
    return errors


def test_python_and_cpp_compute_the_same_id_and_the_saved_one(tmp_path: Path) -> None:
    bundle = make_bundle(*_small(1))
    assert len(bundle.model_version) == 16 and int(bundle.model_version, 16) >= 0
    assert _runtime.bundle_id(bundle.config_bytes, bundle.weights_bytes) == bundle.model_version
    saved = save_bundle(tmp_path / "m", bundle)
    assert (tmp_path / "m" / "config.json").read_bytes() == bundle.config_bytes
    assert Runtime.load(saved.path).model_version == bundle.model_version
    assert load_bundle(saved.path).model_version == bundle.model_version
    # The id covers every byte of both files: one changed byte anywhere changes it.
    weights = bytearray(bundle.weights_bytes)
    weights[-1] ^= 1
    assert _runtime.bundle_id(bundle.config_bytes, bytes(weights)) != bundle.model_version
    config = bundle.config_bytes.replace(b'"window": 16', b'"window":  16')
    assert _runtime.bundle_id(config, bundle.weights_bytes) != bundle.model_version
    # ... except the id's own value, which is blanked before hashing.
    assert stamp(bundle.config_bytes.replace(bundle.model_version.encode(), b"x"), bundle.weights_bytes) == (
        bundle.config_bytes
    )


def test_half_copied_bundle_is_refused_by_every_engine_naming_both_ids(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Config of model A with the weights of model B used to load, report A's id and score with
    B's weights. Same graph, different weights: only the id can tell."""
    a = load_bundle(tiny_model_dir)
    b = save_bundle(
        tmp_path / "b", make_bundle(a.config, {k: v * np.float32(1.01) for k, v in a.weights.items()})
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tiny_model_dir / "config.json", mixed / "config.json")
    shutil.copy(Path(b.path) / "model.safetensors", mixed / "model.safetensors")
    engines = [*ENGINES, "torch"]
    errors = _load_everywhere(mixed, engines)
    assert len(errors) == len(engines) + 1
    computed = _runtime.bundle_id(
        (mixed / "config.json").read_bytes(), (mixed / "model.safetensors").read_bytes()
    )
    # The configs differ only in their ids, so the mixed files hash to B: the message names the
    # model the weights belong to.
    assert computed == b.model_version != a.model_version
    for message in errors:
        assert "\n" not in message
        assert "do not belong together" in message
        assert (
            a.model_version in message and computed in message
        )  # what config.json claims, what the files are
    # The CLI says the same in one line with status 2.
    from memae_ts.cli import main

    assert main(["info", str(mixed)]) == 2


def test_edited_config_is_refused_until_stamped_again(tmp_path: Path) -> None:
    path = Path(save_bundle(tmp_path / "m", make_bundle(*_small(1, threshold=1.0))).path)
    config = json.loads((path / "config.json").read_text())
    config["threshold"]["value"] = 1000.0
    (path / "config.json").write_text(json.dumps(config))
    assert all("do not belong together" in e for e in _load_everywhere(path))
    restamp(path)
    assert _load_everywhere(path) == []
    assert Runtime.load(path).threshold == 1000.0


def test_format_1_bundles_are_refused_with_the_way_out(tmp_path: Path) -> None:
    config, weights = _small(1)
    config["format_version"] = 1
    path = write_bundle(tmp_path / "old", config, weights)
    for message in _load_everywhere(path):
        assert "format" in message and "version 1" in message and "memae-ts upgrade" in message


# ------------------------------------------------------------------------------ atomic save


def test_save_replaces_a_bundle_without_a_reader_ever_seeing_a_mix(tmp_path: Path) -> None:
    """A reader loading in a loop while the bundle is saved over and over sees A or B, whole.
    The old save replaced config.json and model.safetensors one after the other."""
    bundles = [make_bundle(*_small(1)), make_bundle(*_small(2))]
    target = tmp_path / "served"
    save_bundle(target, bundles[0])
    stop = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            save_bundle(target, bundles[i % 2])

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        for _ in range(150):
            try:
                loaded = load_bundle(target)
            except BundleError as exc:
                failures.append(str(exc))
                continue
            seen.add(loaded.model_version)
            expected = next(b for b in bundles if b.model_version == loaded.model_version)
            for name, array in expected.weights.items():
                np.testing.assert_array_equal(loaded.weights[name], array)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert seen <= {b.model_version for b in bundles}
    assert [p.name for p in tmp_path.iterdir()] == ["served"]  # no staging directory left behind


def test_save_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="holds other files than a model bundle"):
        save_bundle(home, make_bundle(*_small(1)))
    assert (home / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_bundle(save_bundle(empty, make_bundle(*_small(1))).path).sensors == ["s0", "s1", "s2"]


def test_save_keeps_the_permissions_of_a_replaced_bundle(tmp_path: Path) -> None:
    target = tmp_path / "m"
    save_bundle(target, make_bundle(*_small(1)))
    target.chmod(0o750)
    save_bundle(target, make_bundle(*_small(2)))
    assert target.stat().st_mode & 0o777 == 0o750


def test_save_into_a_missing_parent_or_unwritable_place_is_one_line(tmp_path: Path) -> None:
    save_bundle(tmp_path / "a" / "b" / "m", make_bundle(*_small(1)))
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="cannot create the bundle directory"):
        save_bundle(tmp_path / "file" / "m", make_bundle(*_small(1)))


# ------------------------------------------------------------------------------ strict JSON


def _both(config: bytes, tensors: bytes) -> tuple[str | None, str | None]:
    """(Python error, C++ error); None where the reader accepted the bundle."""
    py = cpp = None
    try:
        from memae_ts.engines.bundle import decode_bundle

        decode_bundle(config, tensors)
    except BundleError as exc:
        py = str(exc)
    try:
        Runtime.from_bytes(config, tensors)
    except BundleError as exc:
        cpp = str(exc)
    return py, cpp


def test_duplicate_keys_are_refused_by_both_readers() -> None:
    """C++ kept the first key, Python the last: a threshold of 1 in one engine, 1000 in the other."""
    config, weights = _small(1, threshold=1.0)
    tensors = save(weights)
    raw = json.dumps(config).replace('"value": 1.0', '"value": 1.0, "value": 1000.0').encode()
    py, cpp = _both(stamped(raw, tensors), tensors)
    assert py is not None and "duplicate key 'value'" in py
    assert cpp is not None and 'duplicate key "value"' in cpp
    # In the safetensors header as well (a tensor named twice, with different data).
    header_len = int.from_bytes(tensors[:8], "little")
    header = json.loads(tensors[8 : 8 + header_len])
    name = "memory.weight"
    text = json.dumps(header)
    dup = text[:-1] + f', "{name}": ' + json.dumps(header[name]) + "}"
    dup = dup + " " * (header_len - len(dup)) if len(dup) <= header_len else dup
    blob = len(dup).to_bytes(8, "little") + dup.encode() + tensors[8 + header_len :]
    py, cpp = _both(stamped(config, blob), blob)
    assert py is not None and "duplicate key" in py
    assert cpp is not None and "duplicate key" in cpp


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nesting deeper than 64 levels"),
        ('{"a": ' + "[" * 64 + "]" * 64 + "}", "nesting deeper than 64 levels"),
        ('{"a": NaN}', "NaN is not a valid number"),
        ('{"a": 1e999}', "out of range"),
        ('{"a": 1e-999}', "out of range"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"a": 1' + "0" * 64 + "}", "too long"),
    ],
)
def test_python_json_refusals_are_bundle_errors(text: str, message: str) -> None:
    """A config nested 100,000 deep gave RecursionError on the Python path."""
    with pytest.raises(BundleError, match=message):
        read_json(text.encode(), "config.json")


def test_json_depth_limit_is_the_same_in_both_readers() -> None:
    for depth, ok in ((63, True), (64, False)):  # plus the top-level object
        nested = "[" * depth + "]" * depth
        config, weights = _small(1)
        tensors = save(weights)
        raw = json.dumps({**config, "training": "X"}).replace('"X"', nested).encode()
        py, cpp = _both(stamped(raw, tensors), tensors)
        assert (py is None, cpp is None) == (ok, ok), (depth, py, cpp)


# ------------------------------------------------------------------------------ limits


def test_limits_are_the_same_numbers_in_both_readers() -> None:
    for name, value in _runtime.LIMITS.items():
        assert getattr(Limits, name) == value, name


@pytest.mark.parametrize(
    ("path", "value", "python", "cpp"),
    [
        (["scaler", "scale", 0], 1e-300, "absurd", r"outside \[1e-12, 1e12\]"),
        (["scaler", "scale", 1], 1e13, "absurd", r"outside \[1e-12, 1e12\]"),
        (["scaler", "center", 2], 1e300, "beyond", "beyond"),
        (["threshold", "value"], 1e-300, "must be a number in", "must be in"),
        (["network", "memory", "temperature"], 1e-9, "must be a number in", "must be in"),
        (["network", "memory", "epsilon"], 5.0, "must be a number in", "must be in"),
        (["window"], 12.0, "integer", "integer"),
        (["network", "encoder", 1, "negative_slope"], 1e9, "must be a number in", "must be in"),
    ],
)
def test_absurd_numbers_are_refused_by_both_readers(
    path: list[Any], value: Any, python: str, cpp: str
) -> None:
    """scale = 1e-300 used to load and give infinite scores."""
    config, weights = _small(1)
    if path[-1] == "negative_slope":
        config["network"]["encoder"][1] = {"op": "leaky_relu", "negative_slope": 0.01}
    tensors = save(weights)
    py, cc = _both(stamped(edited(config, path, value), tensors), tensors)
    assert py is not None and cc is not None
    assert __import__("re").search(python, py), py
    assert __import__("re").search(cpp, cc), cc


@pytest.mark.parametrize("kind", [None, "minmax", 3])
def test_a_scaler_of_no_known_kind_is_refused_by_both_readers(kind: Any) -> None:
    """A fuzzed bundle with 'kind' renamed in its scaler loaded in both readers, and the
    numpy engine then failed with a KeyError instead of a one-line bundle error."""
    config, weights = _small(1)
    if kind is None:
        del config["scaler"]["kind"]
    else:
        config["scaler"]["kind"] = kind
    tensors = save(weights)
    py, cc = _both(stamped(config, tensors), tensors)
    assert py is not None and "scaler.kind" in py, py
    assert cc is not None and "scaler" in cc and "kind" in cc, cc


def _padding_tower(padding: int, stride: int) -> tuple[dict[str, Any], bytes]:
    """The shape of the crafted bundle: 63 weight-free paddings grow a 1-channel activation,
    a 1x1 conv widens it to 16 channels, one strided conv brings it back to the window. About
    1.5 KB of files; the old runtime scored it with ~550 MiB of scratch per thread."""
    grow = 63 * 2 * padding
    window = next(w for w in range(1, 5000) if (w + grow - 1) // stride + 1 == w)
    weights = {
        "e.w": np.ones((1, 1, 1), np.float32),
        "e.b": np.zeros(1, np.float32),
        "u.w": np.ones((16, 1, 1), np.float32),
        "u.b": np.zeros(16, np.float32),
        "d.w": np.full((1, 16, 1), 0.01, np.float32),
        "d.b": np.zeros(1, np.float32),
    }
    pad = {"op": "conv1d", "weight": "e.w", "bias": "e.b", "stride": 1, "padding": padding}
    config = {
        "model_id": "",
        "format": "memae-ts-bundle",
        "format_version": 2,
        "sensors": ["a"],
        "window": window,
        "scaler": {"kind": "standard", "center": [0.0], "scale": [1.0]},
        "threshold": {"method": "quantile", "value": 1.0},
        "network": {
            "kind": "conv",
            "window": window,
            "n_sensors": 1,
            "encoder": [pad] * 63
            + [{"op": "conv1d", "weight": "u.w", "bias": "u.b", "stride": 1, "padding": 0}],
            "memory": None,
            "decoder": [{"op": "conv1d", "weight": "d.w", "bias": "d.b", "stride": stride, "padding": 0}],
        },
    }
    tensors = save(weights)
    return json.loads(stamped(config, tensors)), tensors


def test_tiny_bundle_cannot_make_a_call_allocate_hundreds_of_mib() -> None:
    config, tensors = _padding_tower(4096, 4096)  # what the old limits allowed
    raw = json.dumps(config).encode()
    assert len(raw) + len(tensors) < 12_000
    py, cpp = _both(stamped(raw, tensors), tensors)
    assert py is not None and "'padding' must be an integer in [0, 1024]" in py
    assert cpp is not None and "padding must be an integer in [0, 1024]" in cpp
    # Within the limits the same trick loads, but a call's scratch stays under the 64 MiB cap
    # (fewer windows per pass), and it scores like the reference engine.
    config, tensors = _padding_tower(1024, 1024)
    raw = stamped(config, tensors)
    runtime = Runtime.from_bytes(raw, tensors)
    model = runtime._model
    assert model.scratch_bytes(16) > Limits.SCRATCH_BYTES >= model.scratch_bytes(model.chunk)
    from memae_ts.engines.bundle import decode_bundle
    from memae_ts.engines.engine_numpy import NumpyEngine

    x = np.random.default_rng(0).normal(size=(model.chunk * 2 + 1, runtime.window, 1)).astype(np.float32)
    np.testing.assert_allclose(
        runtime.score(x)[0], NumpyEngine(decode_bundle(raw, tensors)).score(x)[0], rtol=1e-4
    )


def test_millions_of_memory_slots_are_refused() -> None:
    """4 M one-dimensional slots cost 331 MiB of runtime memory from a 16 MB file."""
    config = {
        "model_id": "",
        "format": "memae-ts-bundle",
        "format_version": 2,
        "sensors": ["a"],
        "window": 1,
        "scaler": {"kind": "standard", "center": [0.0], "scale": [1.0]},
        "threshold": {"method": "quantile", "value": 1.0},
        "network": {
            "kind": "mlp",
            "window": 1,
            "n_sensors": 1,
            "encoder": [{"op": "linear", "weight": "w", "bias": "b"}],
            "memory": {
                "weight": "m",
                "slots": 70000,
                "dim": 1,
                "addressing": "dot",
                "temperature": 1.0,
                "shrink_threshold": 0.0,
                "epsilon": 1e-12,
            },
            "decoder": [{"op": "linear", "weight": "w", "bias": "b"}],
        },
    }
    weights = {
        "w": np.ones((1, 1), np.float32),
        "b": np.zeros(1, np.float32),
        "m": np.ones((70000, 1), np.float32),
    }
    tensors = save(weights)
    py, cpp = _both(stamped(config, tensors), tensors)
    assert py is not None and "'slots' must be an integer in [1, 65536]" in py
    assert cpp is not None and "slots must be an integer in [1, 65536]" in cpp


def test_oversized_files_are_refused_before_parsing(tmp_path: Path) -> None:
    config, weights = _small(1)
    path = write_bundle(tmp_path / "big", config, weights)
    with open(path / "config.json", "ab") as handle:
        handle.write(b" " * Limits.CONFIG_BYTES)
    for message in _load_everywhere(path):
        assert "larger than the limit of 8 MiB" in message


def test_weights_with_overlapping_or_trailing_bytes_are_refused_by_both() -> None:
    config, weights = _small(1)
    tensors = save(weights)
    for blob in (tensors + b"\0\0\0\0", tensors[:-4]):
        py, cpp = _both(stamped(config, blob), blob)
        assert py is not None and cpp is not None
    header_len = int.from_bytes(tensors[:8], "little")
    header = json.loads(tensors[8 : 8 + header_len])
    first = min((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")[1]
    second = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")[1][1]
    header[second]["data_offsets"] = list(header[first]["data_offsets"])  # same bytes twice
    text = json.dumps(header).encode()
    blob = len(text).to_bytes(8, "little") + text + tensors[8 + header_len :]
    py, cpp = _both(stamped(config, blob), blob)
    assert py is not None and cpp is not None


def test_bundle_id_helper_matches_its_definition() -> None:
    config = b'{"model_id": "zz", "x": 1}'
    span = (13, 17)
    assert config[span[0] : span[1]] == b'"zz"'
    assert bundle_id(config, b"w", [span]) == _runtime.bundle_id(config, b"w")
    # created_at is blanked too: the same data and seed give the same id whenever fitted.
    dated = b'{"created_at": "2026-01-01", "model_id": "zz"}'
    later = b'{"created_at": "2027-12-31", "model_id": "zz"}'
    assert (
        _runtime.bundle_id(dated, b"w")
        == _runtime.bundle_id(later, b"w")
        == stamp(dated, b"w")[-18:-2].decode()
    )
    assert _runtime.bundle_id(dated, b"w") != _runtime.bundle_id(dated.replace(b"zz", b"z"), b"x")


def test_upgrade_converts_a_format_1_bundle_after_checking_its_old_id(tmp_path: Path) -> None:
    from memae_ts.cli import main
    from memae_ts.cli.commands.upgrade import legacy_model_id

    config, weights = _small(1)
    config["format_version"] = 1
    config["model_id"] = legacy_model_id(config, weights)
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(save(weights))
    (old / "config.json").write_text(json.dumps(config))
    mixed = tmp_path / "mixed"
    shutil.copytree(old, mixed)
    (mixed / "model.safetensors").write_bytes(save(_small(2)[1]))
    assert main(["upgrade", str(mixed)]) == 2  # a half-copied format-1 bundle is not converted
    assert main(["upgrade", str(old), "-o", str(tmp_path / "new")]) == 0
    assert _load_everywhere(tmp_path / "new") == []
    assert main(["upgrade", str(old)]) == 0  # in place
    assert load_bundle(old).config["format_version"] == 2
    np.testing.assert_array_equal(load_bundle(old).weights["memory.weight"], weights["memory.weight"])


def test_save_through_a_symlink_replaces_the_directory_it_points_to(tmp_path: Path) -> None:
    """The gateway layout of docs/edge.md: `model -> model-1`. The link stays a link."""
    save_bundle(tmp_path / "model-1", make_bundle(*_small(1)))
    (tmp_path / "model").symlink_to("model-1")
    new = save_bundle(tmp_path / "model", make_bundle(*_small(2)))
    assert (tmp_path / "model").is_symlink()
    assert load_bundle(tmp_path / "model").model_version == new.model_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model-1"]
