"""Typed errors: every user-facing failure names the file, row, column or field at fault."""

from __future__ import annotations


class MemaeError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataError(MemaeError, ValueError):
    """The input data cannot be used as given (bad CSV, missing column, too short, ...)."""


class BundleError(MemaeError, ValueError):
    """A model bundle is missing, corrupt, from a newer version, or does not match the data."""


class NotFittedError(MemaeError, ValueError, AttributeError):
    """A model used before `fit` or `load`. The bases match scikit-learn's NotFittedError, so
    code (and scikit-learn's checks) that catch ValueError or AttributeError see it."""


class DataWarning(UserWarning):
    """Something in the data was repaired or ignored; the message says what and where.

    Defined here, not in memae_ts.io.data, so the scoring side (the scaler in a bundle) can
    raise it without importing the data loader and with it pandas (70 MB of a gateway's
    runtime process)."""


class MissingDependencyError(MemaeError, ImportError):
    """An optional dependency (torch for training, matplotlib for plots) is not installed."""


def require_torch() -> object:
    """Import torch or explain how to get it: training is an optional extra."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise MissingDependencyError(
            "training needs PyTorch, which is not installed. "
            "Install the training extra: pip install 'memae-ts[train]'"
        ) from exc
    return torch
