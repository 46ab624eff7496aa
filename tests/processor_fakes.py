"""Stand-ins for the Kafka record and the engine when StreamProcessor runs in-process (its unit
tests, the resampling tests, bench/per_asset.py): the record carries only what the processor
reads, and the engine's score is the window's mean, enough to check plumbing, not modelling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Msg:
    partition: int
    offset: int
    key: bytes
    value: bytes
    topic: str = "in"
    timestamp: int = 0


class MeanEngine:
    """Score = mean of the window; contributions = each sensor's mean."""

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contrib = windows.mean(axis=1)
        return contrib.mean(axis=1), contrib


class ScriptedPolls:
    """A source's ``poll`` from a script of batches (``self.batches``, one per call) and the
    parts of the source protocol a fake has nothing to do for; each fake adds its own
    ``commit`` and ``history_mask`` rules."""

    batches: list[list[Msg]]

    def poll(self, timeout_ms: int) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def lags(self, next_offsets: dict[int, int]) -> dict[int, int]:
        return {}

    def settle(self, timeout_ms: int) -> None:
        pass

    def close(self) -> None:
        pass
