"""memae-ts: unsupervised anomaly detection for industrial sensor data with a memory-augmented
autoencoder (MemAE, Gong et al., ICCV 2019).

Importing the package never imports torch: the scoring side (bundle loading, the numpy and C++
engines, connectors) runs on numpy alone, and only training needs ``memae-ts[train]``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from memae_ts.errors import BundleError, DataError, MemaeError, MissingDependencyError

# Busy-waiting OpenMP threads (the default) make the small matrices of a sensor model train
# 15-20x slower as soon as another process competes for the cores (measured on a shared 2-core
# machine); passive waiting costs nothing on an idle one. Must be set before torch loads, and
# never overrides a user's choice.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
