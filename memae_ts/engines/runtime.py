"""The C++ edge runtime behind a small Python face.

`Runtime.load(bundle_dir)` validates the bundle in C++ (bounds-checked JSON and safetensors
parsing, graph shapes, finite weights) and scores windows with SIMD kernels chosen for this CPU.
It never imports torch, so a gateway needs only numpy and this package. The C++ model is
immutable and every call has its own scratch memory, and compute runs without the GIL: one
Runtime can serve many threads at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memae_ts import _runtime
from memae_ts.errors import BundleError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from memae_ts.engines.bundle import Bundle

__all__ = ["PRECISIONS", "Runtime", "available_isas", "resolve_precision"]

_F32 = np.dtype(np.float32)
PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: str | None) -> str:
    """`precision`, else MEMAE_TS_PRECISION, else "fp32"; an unknown name is one line naming it."""
    chosen = precision if precision is not None else os.environ.get("MEMAE_TS_PRECISION", "") or "fp32"
    if chosen not in PRECISIONS:
        where = "precision" if precision is not None else "MEMAE_TS_PRECISION"
        raise DataError(f"{where} must be one of {', '.join(PRECISIONS)}, got {chosen!r}")
    return chosen


def available_isas() -> list[str]:
    """Kernel tables this CPU can run, best last (the runtime uses the last one)."""
    return list(_runtime.available_isas())


class Runtime:
    """A loaded bundle ready to score raw windows shaped (batch, window, sensors)."""

    name = "runtime"

    def __init__(
        self, model: _runtime.Model, path: str | None = None, threads: int = 1, precision: str | None = None
    ) -> None:
        """`precision` "bf16" (or MEMAE_TS_PRECISION=bf16) runs the convolution GEMMs in bf16
        with FP32 accumulation on a CPU with AVX512_BF16 (docs/runtime.md states the error
        bound); the memory addressing and the score stay FP32. Refused with one line on a CPU
        without it or for a model without convolutions."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._model = model
        self.path = path
        self.threads = threads
        self._bundle: Bundle | None = None
        chosen = resolve_precision(precision)
        if chosen != "fp32":
            try:
                model.set_precision(chosen)
            except ValueError as exc:
                raise DataError(str(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 1, precision: str | None = None) -> Runtime:
        """Load `path` (a bundle directory). `threads` > 1 splits large batches across threads."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root}: model bundle directory not found")
        try:
            model = _runtime.Model.load(str(root))
        except _runtime.FormatError as exc:
            raise BundleError(f"{root}: {exc}") from None
        return cls(model, str(root), threads, precision)

    @classmethod
    def from_bytes(
        cls, config: bytes, tensors: bytes, threads: int = 1, precision: str | None = None
    ) -> Runtime:
        """Load from the bytes of config.json and model.safetensors (no files needed)."""
        try:
            model = _runtime.Model.from_bytes(config, tensors)
        except _runtime.FormatError as exc:
            raise BundleError(str(exc)) from None
        return cls(model, None, threads, precision)

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 1, precision: str | None = None) -> Runtime:
        """Load an already validated Bundle, also one that exists only in memory: the C++ loader
        checks the same two files' bytes again, integrity id included."""
        from memae_ts.engines.bundle import encode_bundle

        config, tensors = bundle.config_bytes, bundle.weights_bytes
        if not config or not tensors:
            config, tensors = encode_bundle(bundle.config, bundle.weights)
        try:
            model = _runtime.Model.from_bytes(config, tensors)
        except _runtime.FormatError as exc:
            raise BundleError(f"{bundle.path}: {exc}") from None
        runtime = cls(model, bundle.path, threads, precision)
        runtime._bundle = bundle
        return runtime

    @property
    def bundle(self) -> Bundle:
        """The bundle as the Python side sees it (loaded on first use, for engine parity)."""
        if self._bundle is None:
            if self.path is None:
                raise BundleError("this runtime was loaded from bytes and has no bundle directory")
            from memae_ts.engines.bundle import load_bundle

            self._bundle = load_bundle(self.path)
        return self._bundle

    @property
    def model_version(self) -> str:
        """The integrity id the C++ loader computed and checked (docs/bundle-format.md)."""
        return str(self._model.model_id)

    @property
    def window(self) -> int:
        return int(self._model.window)

    @property
    def sensors(self) -> list[str]:
        return list(self._model.sensors)

    @property
    def threshold(self) -> float:
        return float(self._model.threshold)

    @property
    def precision(self) -> str:
        """'fp32' or 'bf16' (the convolution GEMMs; everything else is FP32 either way)."""
        return str(self._model.precision)

    @property
    def reduction(self) -> str:
        """The bundle's score reduction the C++ side applies: 'mean', 'max' or 'last_rows'."""
        return str(self._model.reduction)

    @property
    def half_life_rows(self) -> float:
        """`last_rows` only: rows back from the newest at which a row's weight halves (else 0)."""
        return float(self._model.half_life_rows)

    @property
    def isa(self) -> str:
        """Kernel table in use, e.g. 'avx512_8x32' (ISA and GEMM register tile)."""
        return str(self._model.isa)

    def _windows(self, windows: Any) -> np.ndarray:
        """Shape/dtype checks with actionable messages; C-contiguous float32 passes uncopied."""
        if not isinstance(windows, np.ndarray):
            raise DataError(f"windows must be a numpy array, got {type(windows).__name__}")
        if windows.dtype != np.float32:
            raise DataError(
                f"windows must be float32, got {windows.dtype}; convert with windows.astype(np.float32)"
            )
        expected = (self._model.window, self._model.n_sensors)
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise DataError(
                f"windows must have shape (batch, {expected[0]}, {expected[1]}), got {windows.shape}"
            )
        return windows if windows.flags.c_contiguous else np.ascontiguousarray(windows)

    def _call(self, method: Any, windows: Any) -> Any:
        # Fast path for the common case (native float32, C-contiguous): at batch 1 the Python
        # checks would otherwise cost as much as the network. The C++ side checks the shape.
        if not (type(windows) is np.ndarray and windows.dtype is _F32 and windows.flags.c_contiguous):
            windows = self._windows(windows)
        try:
            return method(windows, self.threads)
        except ValueError as exc:  # NaN/Inf input found by the C++ side
            raise DataError(str(exc)) from None

    def score(self, windows: Any) -> tuple[np.ndarray, np.ndarray]:
        """Window scores (B,) and per-sensor contributions (B, S); float32."""
        if type(windows) is np.ndarray and windows.dtype is _F32 and windows.flags.c_contiguous:
            try:  # the hot path at batch 1, kept free of extra Python calls
                scores, contributions = self._model.score(windows, self.threads)
            except ValueError as exc:
                raise DataError(str(exc)) from None
            return scores, contributions
        scores, contributions = self._call(self._model.score, windows)
        return scores, contributions

    def normalised_score(self, windows: Any) -> np.ndarray:
        """Scores divided by the bundle threshold: 1.0 is the alarm line."""
        return self.score(windows)[0] / np.float32(self.threshold)

    def reconstruct(self, windows: Any) -> np.ndarray:
        """Reconstructions in scaled units (B, window, sensors), as the numpy engine returns."""
        return self._call(self._model.reconstruct, windows)

    def attention(self, windows: Any) -> np.ndarray | None:
        """Memory addressing weights after shrinkage, (B, L, slots) for conv, (B, slots) for mlp.

        None when the model has no memory module (plain autoencoder), like the other engines.
        """
        if self._model.memory_slots == 0:
            return None
        weights = self._call(self._model.attention, windows)
        return weights[:, 0, :] if self._model.kind == "mlp" else weights

    def analyse(self, windows: Any, encodings: bool = False) -> tuple[np.ndarray | None, ...]:
        """Scores, contributions, addressing (B, L, slots), novelty (B, L) — 1 − cos between the
        encoding and its memory read-out per latent position — and, when asked, the encodings
        (B, L, C), all from one pass of the C++ network (what the daemon runs)."""
        if self._model.memory_slots == 0:
            raise ValueError("this model has no memory module")
        if not (type(windows) is np.ndarray and windows.dtype is _F32 and windows.flags.c_contiguous):
            windows = self._windows(windows)
        try:
            return tuple(self._model.analyse(windows, self.threads, encodings))
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def memory(self) -> np.ndarray:
        """A copy of the memory matrix in use (slots, C)."""
        return self._model.memory()

    def set_memory(self, memory: np.ndarray) -> None:
        """Score with another memory matrix (drift following). Not safe while another thread
        scores with this Runtime: memae_ts.detection.following serialises the two."""
        self._model.set_memory(np.ascontiguousarray(memory, dtype=np.float32))
