"""The model bundle: a directory with `config.json` and `model.safetensors`.

Loading checks everything a scoring engine relies on before any number is computed, so a
truncated copy, a hand-edited config or a bundle from a newer release is refused with a message
that names the file and field, never a crash deep inside an engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memae_ts.errors import BundleError
from memae_ts.scaling import Scaler

FORMAT_NAME = "memae-ts-bundle"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_LAYER_OPS = ("conv1d", "conv_transpose1d", "linear", "relu", "leaky_relu", "tanh")


@dataclass
class Bundle:
    """A loaded, validated bundle. `weights` are float32 C-contiguous numpy arrays."""

    path: str
    config: dict[str, Any]
    weights: dict[str, np.ndarray]

    @property
    def sensors(self) -> list[str]:
        return list(self.config["sensors"])

    @property
    def window(self) -> int:
        return int(self.config["window"])

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"]["value"])

    @property
    def scaler(self) -> Scaler:
        return Scaler.from_config(self.config["scaler"])

    @property
    def network(self) -> dict[str, Any]:
        return dict(self.config["network"])

    @property
    def model_version(self) -> str:
        """Short id that changes whenever the weights or config change (for metrics, logs)."""
        return str(self.config.get("model_id", "unknown"))


def data_fingerprint(values: np.ndarray, sensors: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(sensors).encode())
    digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _model_id(config: dict[str, Any], weights: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    stable = {k: v for k, v in config.items() if k not in ("model_id", "created_at")}
    digest.update(json.dumps(stable, sort_keys=True).encode())
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def make_bundle(config: dict[str, Any], weights: dict[str, np.ndarray], path: str = "<in memory>") -> Bundle:
    """Stamp format fields and the model id, and validate, without touching the disk."""
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    config = dict(config)
    config["format"] = FORMAT_NAME
    config["format_version"] = FORMAT_VERSION
    config["model_id"] = _model_id(config, tensors)
    validate_config(config, f"{path}/{CONFIG_FILE}")
    _check_tensors(config, tensors, f"{path}/{WEIGHTS_FILE}")
    return Bundle(path=path, config=config, weights=tensors)


def save_bundle(path: str | os.PathLike[str], bundle: Bundle) -> Bundle:
    """Write atomically (temp files then rename) so a crash never leaves half a bundle."""
    from safetensors.numpy import save_file

    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target}: exists and is not a directory")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target, suffix=".tmp", delete=False) as tmp:
        tmp_weights = tmp.name
    save_file(bundle.weights, tmp_weights, metadata={"format": FORMAT_NAME})
    os.replace(tmp_weights, target / WEIGHTS_FILE)
    with tempfile.NamedTemporaryFile("w", dir=target, suffix=".tmp", delete=False, encoding="utf-8") as tmp:
        json.dump(bundle.config, tmp, indent=2)
        tmp.write("\n")
        tmp_config = tmp.name
    os.replace(tmp_config, target / CONFIG_FILE)
    return Bundle(path=str(target), config=bundle.config, weights=bundle.weights)


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    root = Path(path)
    if not root.exists():
        raise BundleError(f"{root}: model bundle not found")
    if not root.is_dir():
        raise BundleError(f"{root}: a model bundle is a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    config_path = root / CONFIG_FILE
    weights_path = root / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise BundleError(f"{root}: {required.name} is missing; not a memae-ts model bundle")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{config_path}: not valid JSON ({exc})") from exc
    validate_config(config, str(config_path))
    weights = _read_tensors(weights_path)
    _check_tensors(config, weights, str(weights_path))
    return Bundle(path=str(root), config=config, weights=weights)


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    size = path.stat().st_size
    if size < 8:
        raise BundleError(f"{path}: truncated ({size} bytes)")
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
    if header_len <= 0 or 8 + header_len > size:
        raise BundleError(f"{path}: corrupt or truncated safetensors header")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise BundleError(f"{path}: corrupt weights file ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if array.dtype != np.float32:
            raise BundleError(f"{path}: tensor {name!r} has dtype {array.dtype}, expected float32")
        out[name] = np.ascontiguousarray(array)
    return out


def _fail(where: str, message: str) -> BundleError:
    return BundleError(f"{where}: {message}")


def _require(config: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in config:
        raise _fail(where, f"field {key!r} is missing")
    value = config[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _finite_list(value: Any, length: int, field_name: str, where: str) -> None:
    if not isinstance(value, list) or len(value) != length:
        raise _fail(where, f"field {field_name!r} must be a list of {length} numbers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise _fail(where, f"field {field_name!r} holds a non-finite or non-numeric value")


def validate_config(config: Any, where: str) -> None:
    if not isinstance(config, dict):
        raise _fail(where, "top level must be a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise _fail(where, f"not a memae-ts bundle (format is {config.get('format')!r})")
    version = _require(config, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise _fail(
            where,
            f"bundle format version {version} is newer than this memae-ts supports "
            f"({FORMAT_VERSION}); upgrade memae-ts",
        )
    if version < 1:
        raise _fail(where, f"invalid format_version {version}")
    sensors = _require(config, "sensors", list, where)
    if not sensors or not all(isinstance(s, str) and s for s in sensors):
        raise _fail(where, "field 'sensors' must be a non-empty list of names")
    if len(set(sensors)) != len(sensors):
        raise _fail(where, "field 'sensors' has duplicate names")
    window = _require(config, "window", int, where)
    if window < 1:
        raise _fail(where, "field 'window' must be positive")
    scaler = _require(config, "scaler", dict, where)
    _finite_list(scaler.get("center"), len(sensors), "scaler.center", where)
    _finite_list(scaler.get("scale"), len(sensors), "scaler.scale", where)
    if any(s <= 0 for s in scaler["scale"]):
        raise _fail(where, "field 'scaler.scale' must be positive")
    threshold = _require(config, "threshold", dict, where)
    value = threshold.get("value")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _fail(where, "field 'threshold.value' must be a positive finite number")
    network = _require(config, "network", dict, where)
    if network.get("kind") not in ("conv", "mlp"):
        raise _fail(where, f"network.kind must be 'conv' or 'mlp', got {network.get('kind')!r}")
    if network.get("window") != window or network.get("n_sensors") != len(sensors):
        raise _fail(where, "network window/n_sensors disagree with 'window'/'sensors'")
    for part in ("encoder", "decoder"):
        layers = network.get(part)
        if not isinstance(layers, list) or not layers:
            raise _fail(where, f"network.{part} must be a non-empty list of layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or layer.get("op") not in _LAYER_OPS:
                raise _fail(where, f"network.{part}[{i}] has an unknown op")
    memory = network.get("memory")
    if memory is not None:
        if not isinstance(memory, dict):
            raise _fail(where, "network.memory must be an object or null")
        if memory.get("addressing") not in ("cosine", "dot"):
            raise _fail(where, "network.memory.addressing must be 'cosine' or 'dot'")
        for key in ("temperature", "shrink_threshold", "epsilon"):
            number = memory.get(key)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                raise _fail(where, f"network.memory.{key} must be a finite number")
        if memory["temperature"] <= 0 or not 0 <= memory["shrink_threshold"] < 1:
            raise _fail(where, "network.memory temperature must be > 0 and shrink_threshold in [0, 1)")
    _check_reading(config, where)


def _check_reading(config: dict[str, Any], where: str) -> None:
    """The optional settings that say how data is read and regridded before windows: a wrong
    one would make every score silently different, so it must be well-formed or refused."""
    resample = config.get("resample")
    if resample is not None:
        from memae_ts.resample import ResampleSpec

        if not isinstance(resample, dict):
            raise _fail(where, "field 'resample' must be an object or absent")
        try:
            ResampleSpec.from_config(resample)
        except ValueError as exc:
            raise _fail(where, f"field {exc}") from exc
    reading = config.get("reading")
    if reading is None:
        return
    if not isinstance(reading, dict):
        raise _fail(where, "field 'reading' must be an object or absent")
    for key in ("time_format", "tz"):
        if reading.get(key) is not None and not isinstance(reading[key], str):
            raise _fail(where, f"field 'reading.{key}' must be a string or null")
    if reading.get("dayfirst") is not None and not isinstance(reading["dayfirst"], bool):
        raise _fail(where, "field 'reading.dayfirst' must be true, false or null")


def _tensor(weights: dict[str, np.ndarray], name: Any, where: str) -> np.ndarray:
    if not isinstance(name, str) or name not in weights:
        raise _fail(where, f"tensor {name!r} named by the config is missing")
    return weights[name]


def _check_tensors(config: dict[str, Any], weights: dict[str, np.ndarray], where: str) -> None:
    """Walk the graph with shapes so every engine can trust every index it computes."""
    network = config["network"]
    for name, array in weights.items():
        if not np.all(np.isfinite(array)):
            raise _fail(where, f"tensor {name!r} holds NaN or infinite values")
    n_sensors, window = network["n_sensors"], network["window"]
    if network["kind"] == "conv":
        shape: tuple[int, ...] = (n_sensors, window)
    else:
        shape = (window * n_sensors,)
    shape = _walk(network["encoder"], shape, weights, where, "encoder")
    memory = network.get("memory")
    if memory is not None:
        m = _tensor(weights, memory.get("weight"), where)
        latent_dim = shape[0]
        if m.ndim != 2 or m.shape[1] != latent_dim or m.shape[0] < 1:
            raise _fail(where, f"memory {m.shape} does not match the latent size {latent_dim}")
        if memory.get("slots") != m.shape[0] or memory.get("dim") != m.shape[1]:
            raise _fail(where, "network.memory slots/dim disagree with the memory tensor")
    shape = _walk(network["decoder"], shape, weights, where, "decoder")
    expected = (n_sensors, window) if network["kind"] == "conv" else (window * n_sensors,)
    if shape != expected:
        raise _fail(where, f"decoder output shape {shape} does not match the input {expected}")


def _int_field(layer: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = layer.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"layer field {key!r} must be an integer >= {minimum}")
    return value


def _walk(
    layers: list[dict[str, Any]],
    shape: tuple[int, ...],
    weights: dict[str, np.ndarray],
    where: str,
    part: str,
) -> tuple[int, ...]:
    for i, layer in enumerate(layers):
        op = layer["op"]
        label = f"{where} ({part}[{i}] {op})"
        if op in ("relu", "tanh", "leaky_relu"):
            continue
        w = _tensor(weights, layer.get("weight"), where)
        b = _tensor(weights, layer.get("bias"), where)
        if op == "linear":
            if len(shape) != 1 or w.ndim != 2 or w.shape[1] != shape[0] or b.shape != (w.shape[0],):
                raise _fail(label, f"weight {w.shape} does not fit input {shape}")
            shape = (w.shape[0],)
            continue
        if len(shape) != 2 or w.ndim != 3:
            raise _fail(label, f"weight {w.shape} does not fit input {shape}")
        stride = _int_field(layer, "stride", label, 1)
        padding = _int_field(layer, "padding", label)
        k = w.shape[2]
        if op == "conv1d":
            out_ch, in_ch = w.shape[0], w.shape[1]
            length = (shape[1] + 2 * padding - k) // stride + 1
        else:
            in_ch, out_ch = w.shape[0], w.shape[1]
            output_padding = _int_field(layer, "output_padding", label)
            if padding > k - 1 or output_padding >= stride:
                raise _fail(label, "padding/output_padding out of range")
            length = (shape[1] - 1) * stride - 2 * padding + k + output_padding
        if in_ch != shape[0] or b.shape != (out_ch,) or length < 1:
            raise _fail(label, f"weight {w.shape} does not fit input {shape}")
        shape = (out_ch, length)
    return shape
