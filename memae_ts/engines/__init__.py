"""Choosing a scoring engine for a bundle.

All engines share one face (`bundle`, `score`, `reconstruct`, `attention`) and compute the same
numbers from the same bundle. `auto` prefers the C++ runtime, then torch, then numpy, so a
gateway without torch still scores at full speed.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np

from memae_ts.engines.bundle import Bundle, load_bundle
from memae_ts.errors import MemaeError

ENGINES = ("auto", "runtime", "torch", "onnx", "numpy")


class Engine(Protocol):
    name: str
    bundle: Bundle

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, windows: np.ndarray) -> np.ndarray: ...


def runtime_available() -> bool:
    try:
        from memae_ts.engines import runtime  # noqa: F401
    except ImportError:
        return False
    return True


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(bundle: Bundle, engine: str = "auto", threads: int = 1, precision: str | None = None) -> Any:
    """``threads`` splits large batches across threads in the C++ runtime; the torch engine
    follows ``MEMAE_TS_THREADS`` and the numpy engine its BLAS. ``precision`` "bf16" (or
    ``MEMAE_TS_PRECISION=bf16``) is a C++ runtime option: asked of another engine it is refused,
    and the environment variable applies to the runtime only."""
    if engine not in ENGINES:
        raise MemaeError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if precision not in (None, "fp32") and engine not in ("auto", "runtime"):
        raise MemaeError(f"precision {precision!r} is an option of the C++ runtime, not of --engine {engine}")
    if engine == "auto":
        if runtime_available():
            engine = "runtime"
        elif torch_available():
            engine = "torch"
        else:
            engine = "numpy"
    if engine == "numpy":
        from memae_ts.engines.engine_numpy import NumpyEngine

        return NumpyEngine(bundle)
    if engine == "torch":
        from memae_ts.errors import require_torch

        require_torch()
        from memae_ts.engines.engine_torch import TorchEngine

        return TorchEngine(bundle)
    if engine == "runtime":
        if not runtime_available():
            raise MemaeError("the C++ runtime is not built in this installation; use --engine numpy")
        from memae_ts.engines.runtime import Runtime

        return Runtime.from_bundle(bundle, threads=threads, precision=precision)
    try:
        from memae_ts.engines.export_onnx import OnnxEngine
    except ImportError as exc:
        raise MemaeError("the onnx engine needs: pip install 'memae-ts[onnx]'") from exc
    return OnnxEngine(bundle)


def load_engine(
    path: str | os.PathLike[str], engine: str = "auto", threads: int = 1, precision: str | None = None
) -> Any:
    return make_engine(load_bundle(path), engine, threads, precision)
