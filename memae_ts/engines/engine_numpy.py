"""Reference scoring engine in plain numpy.

It follows docs/bundle-format.md line by line, in float64, with no cleverness: it is the oracle
the C++ runtime and the ONNX export are tested against, and the fallback when neither is
available. It needs nothing but numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memae_ts.engines.bundle import Bundle
from memae_ts.errors import DataError

NORM_EPSILON = 1e-12


def check_windows(windows: Any, window: int, n_sensors: int) -> np.ndarray:
    """Shape/dtype/NaN checks shared by every engine, with messages a user can act on."""
    array = np.asarray(windows)
    if array.ndim != 3 or array.shape[1] != window or array.shape[2] != n_sensors:
        raise DataError(f"windows must have shape (batch, {window}, {n_sensors}), got {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"windows must be floating point, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise DataError("windows contain NaN or infinite values")
    return array


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x (B, Cin, L), w (Cout, Cin, K) → (B, Cout, Lout), as torch.nn.functional.conv1d."""
    _batch, _in_ch, length = x.shape
    _out_ch, _, k = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    out_len = (length + 2 * padding - k) // stride + 1
    idx = np.arange(out_len)[:, None] * stride + np.arange(k)[None, :]  # (Lout, K)
    patches = padded[:, :, idx]  # (B, Cin, Lout, K)
    return np.einsum("bclk,ock->bol", patches, w, optimize=True) + b[None, :, None]


def conv_transpose1d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int, output_padding: int
) -> np.ndarray:
    """x (B, Cin, L), w (Cin, Cout, K): zero-insert by stride, pad, convolve with the flipped kernel."""
    batch, in_ch, length = x.shape
    k = w.shape[2]
    dilated = np.zeros((batch, in_ch, (length - 1) * stride + 1), dtype=x.dtype)
    dilated[:, :, ::stride] = x
    edge = k - 1 - padding
    dilated = np.pad(dilated, ((0, 0), (0, 0), (edge, edge + output_padding)))
    flipped = np.ascontiguousarray(w[:, :, ::-1].transpose(1, 0, 2))
    return conv1d(dilated, flipped, b, 1, 0)


def memory_read(z: np.ndarray, memory: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """z (..., C) → (ẑ, ŵ) following the five steps of the spec."""
    if spec["addressing"] == "cosine":
        z_norm = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), NORM_EPSILON)
        m_norm = memory / np.maximum(np.linalg.norm(memory, axis=-1, keepdims=True), NORM_EPSILON)
        similarity = z_norm @ m_norm.T
    else:
        similarity = z @ memory.T
    logits = similarity / float(spec["temperature"])
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    threshold = float(spec["shrink_threshold"])
    if threshold > 0:
        shifted = weights - threshold
        weights = np.maximum(shifted, 0.0) * weights / (np.abs(shifted) + float(spec["epsilon"]))
        weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), NORM_EPSILON)
    return weights @ memory, weights


class NumpyEngine:
    """Scores raw windows with a bundle; float64 throughout."""

    name = "numpy"

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._w = {k: v.astype(np.float64) for k, v in bundle.weights.items()}
        scaler = bundle.scaler
        self._center = scaler.center
        self._scale = scaler.scale
        self._reduction = bundle.scoring

    def _layers(self, h: np.ndarray, layers: list[dict[str, Any]]) -> np.ndarray:
        for layer in layers:
            op = layer["op"]
            if op == "relu":
                h = np.maximum(h, 0.0)
            elif op == "leaky_relu":
                h = np.where(h >= 0, h, float(layer["negative_slope"]) * h)
            elif op == "tanh":
                h = np.tanh(h)
            elif op == "linear":
                h = h @ self._w[layer["weight"]].T + self._w[layer["bias"]]
            elif op == "conv1d":
                h = conv1d(
                    h, self._w[layer["weight"]], self._w[layer["bias"]], layer["stride"], layer["padding"]
                )
            elif op == "conv_transpose1d":
                h = conv_transpose1d(
                    h,
                    self._w[layer["weight"]],
                    self._w[layer["bias"]],
                    layer["stride"],
                    layer["padding"],
                    layer.get("output_padding", 0),
                )
        return h

    def forward_scaled(self, scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Reconstruction of already-scaled windows, plus the addressing weights."""
        recon, weights, _z, _z_hat = self._forward_all(scaled)
        return recon, weights

    def _forward_all(
        self, scaled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Reconstruction, addressing weights, encoding z and memory read-out ẑ (the last three
        (B, slots)/(B, C) for mlp, (B, L, slots)/(B, L, C) for conv; None without memory)."""
        network = self.bundle.network
        batch, window, sensors = scaled.shape
        conv = network["kind"] == "conv"
        h = scaled.transpose(0, 2, 1) if conv else scaled.reshape(batch, -1)
        h = self._layers(h, network["encoder"])
        weights = z = z_hat = None
        memory = network.get("memory")
        if memory is not None:
            z = h.transpose(0, 2, 1) if conv else h
            z_hat, weights = memory_read(z, self._w[memory["weight"]], memory)
            h = z_hat.transpose(0, 2, 1) if conv else z_hat
        h = self._layers(h, network["decoder"])
        recon = h.transpose(0, 2, 1) if conv else h.reshape(batch, window, sensors)
        return recon, weights, z, z_hat

    def analyse(self, windows: np.ndarray, encodings: bool = False) -> tuple[np.ndarray, ...]:
        """Scores, contributions, addressing (B, L, slots), novelty (B, L) and, when asked, the
        encodings (B, L, C): the memory's view of each window (memae_ts.detection.modes)."""
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        scaled = self.scale(windows)
        recon, weights, z, z_hat = self._forward_all(scaled)
        if weights is None or z is None or z_hat is None:
            raise ValueError("this model has no memory module")
        if weights.ndim == 2:  # mlp: one latent position
            weights, z, z_hat = weights[:, None, :], z[:, None, :], z_hat[:, None, :]
        scores, contributions = self._reduction.reduce((scaled - recon) ** 2)
        novelty = 1.0 - (z * z_hat).sum(-1) / (
            np.maximum(np.linalg.norm(z, axis=-1), NORM_EPSILON)
            * np.maximum(np.linalg.norm(z_hat, axis=-1), NORM_EPSILON)
        )
        return scores, contributions, weights, novelty, (z if encodings else None)

    def memory(self) -> np.ndarray:
        """The memory matrix in use (slots, C)."""
        return self._w[self._memory_spec()["weight"]].copy()

    def set_memory(self, memory: np.ndarray) -> None:
        """Score with another memory matrix from now on (drift following, memae_ts.detection.following)."""
        name = self._memory_spec()["weight"]
        memory = np.asarray(memory, dtype=np.float64)
        if memory.shape != self._w[name].shape or not np.all(np.isfinite(memory)):
            raise ValueError(f"memory must be finite with shape {self._w[name].shape}, got {memory.shape}")
        self._w[name] = memory.copy()

    def _memory_spec(self) -> dict[str, Any]:
        memory = self.bundle.network.get("memory")
        if memory is None:
            raise ValueError("this model has no memory module")
        return memory

    def scale(self, windows: np.ndarray) -> np.ndarray:
        return (windows.astype(np.float64) - self._center) / self._scale

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """Reconstruction in scaled units (what the network sees and returns)."""
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        return self.forward_scaled(self.scale(windows))[0]

    def attention(self, windows: np.ndarray) -> np.ndarray | None:
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        return self.forward_scaled(self.scale(windows))[1]

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window scores (B,) and per-sensor contributions (B, S), both float64, reduced as the
        bundle's "scoring" says (memae_ts.detection.score_reduction)."""
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        scaled = self.scale(windows)
        recon, _ = self.forward_scaled(scaled)
        return self._reduction.reduce((scaled - recon) ** 2)
