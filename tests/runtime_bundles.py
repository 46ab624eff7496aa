"""Bundles with random weights for the runtime tests, written by hand from docs/bundle-format.md.

They need only numpy and safetensors (no torch), so the runtime tests run where the runtime
does. The graphs follow the trainer's shapes (stride-2 convolutions, transposed convolutions
with output_padding, MLP encoder/decoder) and add the ops the trainer can emit but rarely
does together (tanh, relu, leaky_relu), so every layer kind is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from memae_ts.engines.bundle import stamp
from memae_ts.errors import BundleError


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def random_bundle(
    kind: str = "conv",
    *,
    n_sensors: int = 8,
    window: int = 64,
    channels: tuple[int, ...] = (16, 32),
    hidden: tuple[int, ...] = (64, 32),
    latent: int = 24,
    slots: int = 300,
    kernel: int = 5,
    addressing: str = "cosine",
    temperature: float = 0.05,
    shrink: float | None = None,
    memory: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, weights) of a random network; `shrink=None` means λ = 1/slots like the trainer."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    acts = ["leaky_relu", "tanh", "relu"]

    def act(i: int) -> dict[str, Any]:
        name = acts[i % len(acts)]
        return {"op": name, "negative_slope": 0.01} if name == "leaky_relu" else {"op": name}

    def add(name: str, op: str, w_shape: tuple[int, ...], fan_in: int, **fields: Any) -> dict[str, Any]:
        weights[f"{name}.weight"] = _uniform(rng, w_shape, fan_in)
        out = w_shape[1] if op == "conv_transpose1d" else w_shape[0]
        weights[f"{name}.bias"] = _uniform(rng, (out,), fan_in)
        return {"op": op, "weight": f"{name}.weight", "bias": f"{name}.bias", **fields}

    encoder: list[dict[str, Any]] = []
    decoder: list[dict[str, Any]] = []
    if kind == "conv":
        pad = kernel // 2
        lengths = [window]
        in_ch = n_sensors
        for i, out_ch in enumerate(channels):
            encoder.append(
                add(
                    f"encoder.{2 * i}",
                    "conv1d",
                    (out_ch, in_ch, kernel),
                    in_ch * kernel,
                    stride=2,
                    padding=pad,
                )
            )
            encoder.append(act(i))
            lengths.append((lengths[-1] + 2 * pad - kernel) // 2 + 1)
            in_ch = out_ch
        encoder.append(add("encoder.latent", "conv1d", (latent, in_ch, 3), in_ch * 3, stride=1, padding=1))
        in_ch = latent
        for level in range(len(channels), 0, -1):
            out_ch = channels[level - 1]
            produced = (lengths[level] - 1) * 2 - 2 * pad + kernel
            decoder.append(
                add(
                    f"decoder.{level}",
                    "conv_transpose1d",
                    (in_ch, out_ch, kernel),
                    in_ch * kernel,
                    stride=2,
                    padding=pad,
                    output_padding=lengths[level - 1] - produced,
                )
            )
            decoder.append(act(level))
            in_ch = out_ch
        decoder.append(add("decoder.out", "conv1d", (n_sensors, in_ch, 3), in_ch * 3, stride=1, padding=1))
    else:
        sizes = [window * n_sensors, *hidden]
        for i in range(len(hidden)):
            encoder.append(add(f"encoder.{i}", "linear", (sizes[i + 1], sizes[i]), sizes[i]))
            encoder.append(act(i))
        encoder.append(add("encoder.latent", "linear", (latent, sizes[-1]), sizes[-1]))
        back = [latent, *reversed(hidden)]
        for i in range(len(hidden)):
            decoder.append(add(f"decoder.{i}", "linear", (back[i + 1], back[i]), back[i]))
            decoder.append(act(i + 1))
        decoder.append(add("decoder.out", "linear", (window * n_sensors, back[-1]), back[-1]))
    mem = None
    if memory:
        weights["memory.weight"] = rng.standard_normal((slots, latent)).astype(np.float32)
        mem = {
            "weight": "memory.weight",
            "slots": slots,
            "dim": latent,
            "addressing": addressing,
            "temperature": temperature,
            "shrink_threshold": 1.0 / slots if shrink is None else shrink,
            "epsilon": 1e-12,
        }
    sensors = [f"s{i}" for i in range(n_sensors)]
    config = {
        "model_id": "",
        "format": "memae-ts-bundle",
        "format_version": 2,
        "library_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00Z",
        "sensors": sensors,
        "time_column": None,
        "asset_column": None,
        "window": window,
        "stride": 1,
        "max_gap_seconds": None,
        "max_fill_rows": 3,
        "scaler": {
            "kind": "standard",
            "center": [float(v) for v in rng.normal(100.0, 50.0, n_sensors)],
            "scale": [float(v) for v in rng.uniform(0.5, 20.0, n_sensors)],
        },
        "threshold": {"method": "quantile", "value": 0.75},
        "network": {
            "kind": kind,
            "window": window,
            "n_sensors": n_sensors,
            "encoder": encoder,
            "memory": mem,
            "decoder": decoder,
        },
        "training": {},
    }
    return config, weights


def stamped(config: dict[str, Any] | bytes, tensors: bytes) -> bytes:
    """config.json bytes with the integrity id of `tensors`, so a test reaches the check it
    means to test; a config that has no model_id (or is not valid JSON) is returned as is."""
    raw = config if isinstance(config, bytes) else json.dumps(config, indent=2).encode()
    try:
        return stamp(raw, tensors)
    except BundleError:
        return raw


def split_fuzz_input(data: bytes) -> tuple[bytes, bytes]:
    """config.json and model.safetensors bytes of a cpp/fuzz/fuzz_loader.cpp input (u16 config
    length; bit 15 set: keep the model_id as it is, else it is stamped like the C++ target does)."""
    if len(data) < 2:
        return b"", b""
    head = int.from_bytes(data[:2], "little")
    n = min(head & 0x7FFF, len(data) - 2)
    config, tensors = data[2 : 2 + n], data[2 + n :]
    return (config if head & 0x8000 else stamped(config, tensors)), tensors


def edited(config: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """A deep copy of `config` with the value at `path` (keys and indices) replaced."""
    out = json.loads(json.dumps(config))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def write_bundle(path: Path, config: dict[str, Any], weights: dict[str, np.ndarray]) -> Path:
    """Both files as given (config.json stamped with the weights' integrity id)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = save(weights)
    (path / "model.safetensors").write_bytes(tensors)
    (path / "config.json").write_bytes(stamped(config, tensors))
    return path


def restamp(path: Path) -> Path:
    """Stamp a bundle directory again after a test edited one of its files on purpose."""
    tensors = (path / "model.safetensors").read_bytes()
    (path / "config.json").write_bytes(stamped((path / "config.json").read_bytes(), tensors))
    return path


def random_windows(config: dict[str, Any], batch: int, seed: int = 1) -> np.ndarray:
    """Raw (unscaled) windows around the bundle's scaler, with a few outlying sensors."""
    rng = np.random.default_rng(seed)
    center = np.asarray(config["scaler"]["center"])
    scale = np.asarray(config["scaler"]["scale"])
    shape = (batch, config["window"], len(config["sensors"]))
    z = rng.standard_normal(shape) * rng.uniform(0.2, 3.0, size=(batch, 1, 1))
    return (center + scale * z).astype(np.float32)
