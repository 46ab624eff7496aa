"""memae-ts: unsupervised anomaly detection for industrial sensor data with a memory-augmented
autoencoder (MemAE, Gong et al., ICCV 2019).

Importing the package never imports torch: the scoring side (bundle loading, the numpy and C++
engines, connectors) runs on numpy alone, and only training needs ``memae-ts[train]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memae_ts.errors import BundleError, DataError, MemaeError, MissingDependencyError

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "DataError",
    "MemAE",
    "MemaeError",
    "MissingDependencyError",
    "__version__",
    "load",
]

if TYPE_CHECKING:  # pragma: no cover
    from memae_ts.estimator import MemAE, load


def __getattr__(name: str) -> Any:
    # The estimator module is imported lazily so `import memae_ts` stays cheap and torch-free.
    if name in ("MemAE", "load"):
        from memae_ts import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'memae_ts' has no attribute {name!r}")
