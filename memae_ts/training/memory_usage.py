"""How much of the memory a trained model actually uses.

A memory that collapses onto one slot reconstructs every window from the same prototype: all
scores look alike and detection is gone (seen on KDDCUP99 with the MLP at temperature 0.05).
Nothing in the training loss flags it, so `fit` measures it on the held-out windows, stores it
in the bundle and warns with the remedy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_WINDOWS = 2048


def memory_usage(weights: np.ndarray) -> dict[str, float]:
    """Slots ever addressed, and the mean number of slots with a nonzero weight per read.

    `weights` are the addressing weights of many reads, shape (..., N).
    """
    flat = weights.reshape(-1, weights.shape[-1])
    active = flat > 0
    return {
        "slots": int(flat.shape[1]),
        "slots_used": int(np.count_nonzero(active.any(axis=0))),
        "mean_active_per_read": float(active.sum(axis=1).mean()) if flat.shape[0] else 0.0,
    }


def collapse_warning(usage: dict[str, float]) -> str | None:
    if usage["slots_used"] <= 1 < usage["slots"]:
        return (
            f"the memory collapsed: every held-out window is read from the same one of "
            f"{usage['slots']} slots, so anomalies and normal windows reconstruct alike. "
            "Refit with a higher --temperature (e.g. 0.5 instead of the default 0.05), or with "
            "--addressing dot, which uses temperature 1 unless --temperature is given."
        )
    return None


def measure(engine: Any, windows: np.ndarray) -> dict[str, float] | None:
    """Usage over `windows` (callers pass at most MAX_WINDOWS); None for a model without memory."""
    weights = engine.attention(windows)
    return None if weights is None else memory_usage(np.asarray(weights))
