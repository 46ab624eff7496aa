"""One line naming the extra to install when an optional library is missing.

The edge daemon and its connectors need libraries a laptop or a scoring-only install does not
(Kafka clients, prometheus-client, orjson, ...). Rather than guard every import in every module,
`memae_ts.edge` and `memae_ts.connectors` call `install()`, which puts a last-resort finder at the
end of `sys.meta_path`: Python asks it only after every real finder has failed, so an installed
library is never affected, and a missing one fails with a `MissingDependencyError` (an
ImportError, and a MemaeError the CLI prints as one line) saying which extra brings it, instead of
a bare `No module named 'kafka'` traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from memae_ts.errors import MissingDependencyError

# top-level import name -> (distribution on PyPI, memae-ts extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "kafka": ("kafka-python", "edge"),
    "confluent_kafka": ("confluent-kafka", "edge"),
    "orjson": ("orjson", "edge"),
    "crc32c": ("crc32c", "edge"),
    "prometheus_client": ("prometheus-client", "edge"),
    "interegular": ("interegular", "edge"),
    "tomli": ("tomli", "edge"),
    "paho": ("paho-mqtt", "mqtt"),
    "asyncua": ("asyncua", "opcua"),
    "torch": ("torch", "train"),
    "tsadmetrics": ("tsadmetrics", "metrics"),
}


class MissingExtraError(MissingDependencyError, ModuleNotFoundError):
    """A library of an optional extra is not installed. A ModuleNotFoundError too, so code that
    probes for an optional module with `except ModuleNotFoundError` keeps working."""


def message(module: str) -> str:
    """`No module named 'kafka' (kafka-python): pip install 'memae-ts[edge]'`."""
    distribution, extra = EXTRAS[module]
    return (
        f"No module named {module!r} ({distribution}), which memae-ts needs for this: "
        f"pip install 'memae-ts[{extra}]'"
    )


class _MissingExtraFinder:
    """Consulted last; raises for the known optional libraries, returns None for the rest."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        top = fullname.partition(".")[0]
        if top in EXTRAS and fullname == top:
            raise MissingExtraError(message(top), name=top)
        return None


def install() -> None:
    """Idempotent: at most one finder, always last."""
    if not any(isinstance(f, _MissingExtraFinder) for f in sys.meta_path):
        sys.meta_path.append(_MissingExtraFinder())


__all__ = ["EXTRAS", "MissingExtraError", "install", "message"]
