"""Following slow drift: the memory moves with normal operation while the model scores (opt-in).

Normal operation wanders — seasons, wear, a re-seated valve — and a frozen model turns every
such drift into an alarm until someone retrains. With drift following, windows scored
*confidently* normal move the memory slots they address along with the way they drift:

- only windows whose alarm level (the normalised score the alarm decision reads: the
  reconstruction score, or with combine "max" the larger of it and the novelty score) is below
  `below` (default 0.5, half-way to the threshold) update anything; a window near or above the
  threshold never does;
- a slot follows how the encodings that address it *move*, not the encodings themselves: a
  trained slot is not the mean of its encodings (the decoder reads a mix of slots), so pulling
  it towards that mean would change the model on perfectly stationary data. For each slot the
  follower first learns a baseline — the attention-weighted mean encoding over its first
  `warmup` (100) windows' worth of weight after the start (or a reset), during which nothing
  moves — then keeps an exponential moving average e_i of the same mean, stepping by 1 − (1 − rate)^{w_i}
  for w_i windows' worth of weight (the same drift whether windows arrive one at a time, as in
  the daemon, or in batches, as offline), and sets slot i = trained slot + (e_i − baseline_i).
  With cosine addressing (the default) the encodings are taken as unit vectors (addressing
  sees only directions) and the shift is scaled by the slot's norm. On stationary data e_i
  stays at the baseline and the memory stays the trained one;
- a move is applied only if the confident windows it was learned from reconstruct at least as
  well with it (one more pass of the network; a rejected move is counted): the decoder was
  trained on read-outs of the trained memory, and measurement showed unchecked moves making
  reconstruction worse;
- a slot's total drift from its trained value is capped at `max_drift` × its trained norm
  (default 0.25):
  a fault that creeps in slowly (the boiling frog) can move the memory only so far, so once
  the creep exceeds what the capped memory explains, the score rises and stays up;
- every update is counted (windows used, windows refused, slot moves cut by the cap) and the
  drift since training is reported (largest and mean relative slot drift); `reset()` restores
  the trained memory.

The engine's memory matrix is replaced through its `set_memory` (the C++ runtime copies it and
re-packs its similarity operand). Scoring and updates hold one lock, so a follower may be used
from several threads. One follower serves all assets of a model: the memory describes normal
operation of the fleet, as training did.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from memae_ts.detection.modes import Modes, ModeScores, window_novelty

FOLLOW_BATCH = 64  # offline scoring with following analyses this many windows per memory update


@dataclass(frozen=True)
class FollowSettings:
    below: float = 0.5
    rate: float = 0.001
    max_drift: float = 0.25
    warmup: float = 100.0  # windows' worth of weight a slot's baseline is learned from

    def check(self) -> FollowSettings:
        if not 0 < self.below <= 1:
            raise ValueError(f"follow below must be in (0, 1], got {self.below}")
        if not 0 < self.rate < 1:
            raise ValueError(f"follow rate must be in (0, 1), got {self.rate}")
        if not 0 <= self.max_drift:
            raise ValueError(f"follow max drift must not be negative, got {self.max_drift}")
        if not self.warmup > 0:
            raise ValueError(f"follow warm-up must be positive, got {self.warmup}")
        return self


@dataclass
class FollowCounts:
    """What following has done since it started (counters never go back)."""

    updates: int = 0  # memory updates applied (one per batch that moved a slot)
    updates_rejected: int = 0  # moves not applied: the windows reconstructed worse with them
    windows_used: int = 0  # windows learned from (baseline or drift)
    windows_refused: int = 0  # windows at or above `below`: scored, never learned from
    slot_moves_capped: int = 0  # slot moves shortened by the bound on total drift
    resets: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class DriftFollower:
    """Wraps an engine with memory; `analyse` scores windows and then follows the confident ones."""

    def __init__(self, engine: Any, settings: FollowSettings | None = None) -> None:
        self.engine = engine
        self.settings = (settings or FollowSettings()).check()
        self.bundle = engine.bundle
        self.modes = Modes.of(engine.bundle)
        self.threshold = float(engine.bundle.threshold)
        if engine.bundle.network.get("memory") is None:
            raise ValueError("drift following needs a model with a memory module")
        if not hasattr(engine, "set_memory"):
            raise ValueError(
                f"the {getattr(engine, 'name', 'chosen')} engine cannot replace its memory; "
                "use the runtime, numpy or torch engine"
            )
        self.trained = np.asarray(engine.memory(), dtype=np.float64)
        self.current = self.trained.copy()
        self._norms = np.maximum(np.linalg.norm(self.trained, axis=1), 1e-12)
        self._cosine = engine.bundle.network["memory"].get("addressing", "cosine") == "cosine"
        self.counts = FollowCounts()
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        slots, dim = self.trained.shape
        self._base_sum = np.zeros((slots, dim))
        self._base_weight = np.zeros(slots)
        self._ready = np.zeros(slots, dtype=bool)
        self._baseline = np.zeros((slots, dim))
        self._average = np.zeros((slots, dim))

    # ------------------------------------------------------------------ scoring
    def analyse(self, windows: np.ndarray) -> ModeScores:
        """Score `windows` with the current memory, then update it from the confident ones."""
        with self._lock:
            if self.modes is not None:
                result = self.modes.analyse(self.engine, windows, encodings=True)
            else:
                scores, contributions, attention, novelty, z = self.engine.analyse(windows, True)
                result = ModeScores(
                    scores=np.asarray(scores, dtype=np.float64),
                    contributions=np.asarray(contributions, dtype=np.float64),
                    mode=np.full(len(windows), -1),
                    novelty=window_novelty(novelty),
                    attention=attention,
                    encodings=z,
                )
            self._update(self.levels(result), result, windows)
        return result

    def levels(self, result: ModeScores) -> np.ndarray:
        """The alarm level a window is judged by for learning (1.0 = threshold): the one the
        bundle's alarm decision reads (memae_ts.detection.modes combine rule)."""
        level = result.scores / self.threshold
        if self.modes is not None:
            level = self.modes.combined(level, result.novelty / self.modes.novelty_threshold)
        return level

    def _update(self, levels: np.ndarray, result: ModeScores, windows: np.ndarray) -> None:
        attention, encodings = result.attention, result.encodings
        assert encodings is not None
        confident = np.isfinite(levels) & (levels < self.settings.below)
        self.counts.windows_refused += int((~confident).sum())
        if not confident.any():
            return
        a = np.asarray(attention, dtype=np.float64)[confident]  # (B, L, slots)
        z = np.asarray(encodings, dtype=np.float64)[confident]  # (B, L, C)
        a = a.reshape(-1, a.shape[-1])
        z = z.reshape(-1, z.shape[-1])
        if self._cosine:  # addressing sees directions: follow the unit encodings, in slot units
            z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        positions = attention.shape[1]
        weight = a.sum(axis=0) / positions  # windows' worth of weight on each slot
        moved = weight > 0
        if not moved.any():
            return
        target = np.zeros_like(self.trained)
        target[moved] = (a[:, moved].T @ z) / (weight[moved, None] * positions)
        self.counts.windows_used += int(confident.sum())
        # Slots still learning their baseline accumulate it; they do not move yet.
        learning = moved & ~self._ready
        self._base_sum[learning] += weight[learning, None] * target[learning]
        self._base_weight[learning] += weight[learning]
        done = learning & (self._base_weight >= self.settings.warmup)
        self._baseline[done] = self._base_sum[done] / self._base_weight[done, None]
        self._average[done] = self._baseline[done]
        self._ready |= done
        follow = moved & self._ready & ~done
        if not follow.any():
            return
        step = 1.0 - (1.0 - self.settings.rate) ** weight[follow]
        self._average[follow] += step[:, None] * (target[follow] - self._average[follow])
        drift = self._average[follow] - self._baseline[follow]
        # In slot units: for cosine addressing the drift is of unit encodings (scaled below).
        unit = np.ones(int(follow.sum())) if self._cosine else self._norms[follow]
        limit = self.settings.max_drift * unit
        size = np.linalg.norm(drift, axis=1)
        over = size > limit
        if over.any():
            drift[over] *= (limit[over] / size[over])[:, None]
            self.counts.slot_moves_capped += int(over.sum())
        if self._cosine:
            drift = drift * self._norms[follow, None]
        candidate = self.current.copy()
        candidate[follow] = self.trained[follow] + drift
        # The gate: a move is kept only if the windows it was learned from reconstruct at least
        # as well with it. The decoder was trained on read-outs of the trained memory, so a
        # move in latent space can make reconstruction worse; such a move is not applied.
        self.engine.set_memory(candidate.astype(np.float32))
        after = np.asarray(self.engine.score(windows[confident])[0], dtype=np.float64)
        if after.mean() > result.scores[confident].mean():
            self.engine.set_memory(self.current.astype(np.float32))
            self.counts.updates_rejected += 1
            return
        self.current = candidate
        self.counts.updates += 1

    # ------------------------------------------------------------------ reporting and reset
    def drift(self) -> dict[str, float]:
        """Drift since training: the largest and the mean slot drift relative to the slot's
        trained norm (0 = the trained memory; the cap is `max_drift`)."""
        relative = np.linalg.norm(self.current - self.trained, axis=1) / self._norms
        return {"max": float(relative.max()), "mean": float(relative.mean())}

    def reset(self) -> None:
        """Back to the trained memory (counters stay; `resets` counts this)."""
        with self._lock:
            self.current = self.trained.copy()
            self.engine.set_memory(self.current.astype(np.float32))
            self._start()  # baselines are learned again from the windows after the reset
            self.counts.resets += 1

    def summary(self) -> str:
        d = self.drift()
        c = self.counts
        return (
            f"drift following: {c.windows_used} windows updated the memory in {c.updates} steps "
            f"({c.updates_rejected} more moves not applied: reconstruction got worse), "
            f"{c.windows_refused} refused (alarm level >= {self.settings.below}); memory drift since "
            f"training max {d['max']:.3f}, mean {d['mean']:.3f} of a slot's norm (cap "
            f"{self.settings.max_drift}); {c.slot_moves_capped} slot moves cut by the cap"
        )
