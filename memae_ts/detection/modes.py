"""Operating modes from the memory, and the novel-mode score.

The memory holds N learned prototypes of normal operation. Windows of one operating state (pump
at full load, idle, cleaning cycle) address the same few slots, so grouping the slots by which
training windows use them gives the plant's operating modes without any label:

1. every window's addressing weights are averaged over its latent positions → a point on the
   probability simplex over the N slots (its "addressing profile"), then smoothed over the
   slots' co-usage (two diffusion steps: windows of one state that read different slots come
   close, because other windows of that state read those slots together);
2. k-means (k-means++ seeding, fixed seed, numpy only) groups the profiles for k = 2 … 8;
   the k with the highest mean silhouette wins, provided it reaches 0.25 (Kaufman and
   Rousseeuw's "no substantial structure" line) and every mode holds at least 1 % of the
   windows; otherwise the plant runs in one mode;
3. each slot belongs to the mode whose windows put the most weight on it (a slot no window
   uses goes with its nearest used slot by cosine);
4. a window's mode is the mode holding the largest share of its addressing weight (a mode
   this rule leaves with under 1 % of the windows is merged away and the slots re-mapped). This rule,
   not the k-means label, is what scoring applies, so it needs only the slot→mode map and gives
   the same answer in every engine and in the daemon. The shares and typical sensor values in
   the bundle are computed with this rule.

The novel-mode score is 1 − cos(z, ẑ) between a window's encoding z and its memory read-out
ẑ, averaged over latent positions: 0 when the memory can rebuild the encoding from its
prototypes, growing as the window's encoding leaves the span of everything learned. It is
normalised by its own threshold, calibrated on held-out normal windows with the same rule and
margin as the reconstruction threshold (1.0 = its alarm line). No test label chooses anything.

How the two signals combine (`combine`): "reconstruction" alarms on the reconstruction score
only (novelty is reported beside it), "max" alarms when either normalised score reaches 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_MODES = 8
MIN_SILHOUETTE = 0.25  # below it k-means structure is not substantial: one mode
MIN_MODE_SHARE = 0.01  # every mode holds at least this share of the windows
MAX_MODE_WINDOWS = 5_000  # training windows the modes are learned from (evenly spaced)
SILHOUETTE_SAMPLE = 1_500  # windows the silhouette is computed on
KMEANS_WINDOWS = 2_000  # windows k-means groups (evenly spaced); all are then assigned
COMBINE_RULES = ("reconstruction", "max")
DEFAULT_COMBINE = "reconstruction"
NOVELTY_MEASURE = "1 - cos(encoding, memory read-out), mean over latent positions"
NO_MODE = -1  # a window whose addressing weights are all zero (nothing survived the shrinkage)


def profiles(attention: np.ndarray) -> np.ndarray:
    """(B, L, slots) or (B, slots) addressing weights → (B, slots) mean over latent positions."""
    attention = np.asarray(attention, dtype=np.float64)
    return attention.mean(axis=1) if attention.ndim == 3 else attention


def assign(attention: np.ndarray, slot_mode: np.ndarray, n_modes: int) -> np.ndarray:
    """Each window's mode: the mode holding the largest share of its addressing weight
    (NO_MODE when the weights are all zero). Ties go to the lower mode number."""
    profile = profiles(attention)
    mass = np.zeros((profile.shape[0], n_modes))
    for mode in range(n_modes):
        mass[:, mode] = profile[:, slot_mode == mode].sum(axis=1)
    out = mass.argmax(axis=1)
    out[mass.max(axis=1) <= 0] = NO_MODE
    return out


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; returns (labels, centres). Deterministic."""
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    closest = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = closest.sum()
        pick = rng.integers(n) if total <= 0 else rng.choice(n, p=closest / total)
        centres[i] = points[pick]
        closest = np.minimum(closest, ((points - centres[i]) ** 2).sum(axis=1))
    labels = np.zeros(n, dtype=np.int64)
    for step in range(iterations):
        # |x|² is the same for every centre, so the nearest centre needs only |c|² − 2 x·c.
        new = ((centres**2).sum(1)[None, :] - 2 * points @ centres.T).argmin(axis=1)
        if step > 0 and np.array_equal(new, labels):
            break
        labels = new
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0
        counts = onehot.sum(axis=0)
        sums = onehot.T @ points
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return labels, centres


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Euclidean); 0 for a single cluster."""
    clusters = np.unique(labels)
    if clusters.size < 2:
        return 0.0
    sq = (points**2).sum(1)
    distances = np.sqrt(np.maximum(sq[:, None] - 2 * points @ points.T + sq[None, :], 0.0))
    n = len(points)
    a = np.zeros(n)
    b = np.full(n, np.inf)
    for c in clusters:
        members = labels == c
        size = members.sum()
        mean_to = distances[:, members].sum(axis=1)
        inside = labels == c
        a[inside] = mean_to[inside] / max(size - 1, 1)
        b[~inside] = np.minimum(b[~inside], mean_to[~inside] / size)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    singleton = np.array([np.sum(labels == labels[i]) == 1 for i in range(n)])
    s[singleton] = 0.0
    return float(s.mean())


@dataclass
class ModeFit:
    """The grouping learned from training windows (what goes into the bundle's `modes`)."""

    slot_mode: np.ndarray  # (slots,) mode of each slot
    n_modes: int
    window_modes: np.ndarray  # (B,) mode of each window by the `assign` rule
    silhouettes: dict[int, float]
    rule: str


def co_usage_embedding(profile: np.ndarray, steps: int = 2) -> np.ndarray:
    """Windows' profiles smoothed over slot co-usage: two windows of one operating state that
    happen to read different slots end up close, because those slots are read together by
    other windows of that state (a diffusion step over the slots' co-usage graph)."""
    total = profile.sum(axis=1, keepdims=True)
    p = profile / np.maximum(total, 1e-12)
    co = p.T @ p
    transition = co / np.maximum(co.sum(axis=1, keepdims=True), 1e-12)
    out = p
    for _ in range(steps):
        out = out @ transition
    return out


def fit_modes(attention: np.ndarray, memory: np.ndarray, seed: int = 0) -> ModeFit:
    """Group the memory slots into operating modes from windows' addressing (module docstring)."""
    profile = profiles(attention)
    n = profile.shape[0]
    # k-means runs on an evenly spaced sample (its cost grows with windows x slots x k); every
    # window is then assigned by the slot rule.
    picked = np.unique(np.linspace(0, n - 1, min(n, KMEANS_WINDOWS)).round().astype(np.int64))
    points = co_usage_embedding(profile[picked])
    points = points[:, points.sum(axis=0) > 0]  # slots nobody reads add nothing to any distance
    m = points.shape[0]
    rng = np.random.default_rng(seed)
    sample = np.arange(m)
    if m > SILHOUETTE_SAMPLE:
        sample = np.sort(rng.choice(m, SILHOUETTE_SAMPLE, replace=False))
    silhouettes: dict[int, float] = {}
    best_k, best_labels, best_s = 1, np.zeros(m, dtype=np.int64), MIN_SILHOUETTE
    for k in range(2, min(MAX_MODES, m - 1) + 1):
        labels, _ = kmeans(points, k, seed=seed)
        if np.bincount(labels, minlength=k).min() < max(1, MIN_MODE_SHARE * m):
            silhouettes[k] = float("nan")  # a mode below 1 % of the windows: not a mode
            continue
        s = silhouette(points[sample], labels[sample])
        silhouettes[k] = s
        if s > best_s:
            best_k, best_labels, best_s = k, labels, s
    slot_mode = _slots_to_modes(profile[picked], best_labels, best_k, memory)
    window_modes = assign(profile, slot_mode, best_k)
    while best_k > 1:  # a mode the assign rule leaves (almost) empty is merged away
        counts = np.bincount(window_modes[window_modes >= 0], minlength=best_k)
        kept = np.flatnonzero(counts >= max(1, MIN_MODE_SHARE * n))
        if kept.size == best_k:
            break
        renumber = np.full(best_k, -1)
        renumber[kept] = np.arange(kept.size)
        labels = np.where(window_modes >= 0, renumber[np.maximum(window_modes, 0)], -1)
        best_k = max(int(kept.size), 1)
        if best_k == 1:
            labels = np.zeros(n, dtype=np.int64)
        slot_mode = _slots_to_modes(profile, labels, best_k, memory)
        window_modes = assign(profile, slot_mode, best_k)
    rule = (
        f"k-means of the windows' mean addressing, smoothed over slot co-usage, for k = 2..{MAX_MODES}; "
        "the k of highest mean silhouette "
        f"if it reaches {MIN_SILHOUETTE} and every mode holds {MIN_MODE_SHARE:.0%} of the windows, else one "
        "mode; a slot belongs to the mode whose windows weight it most; a window's mode is the one holding "
        "most of its addressing weight"
    )
    return ModeFit(slot_mode, best_k, window_modes, silhouettes, rule)


def _slots_to_modes(points: np.ndarray, labels: np.ndarray, k: int, memory: np.ndarray) -> np.ndarray:
    """Each slot to the mode whose windows (`labels`; -1: none) weight it most."""
    usage = np.stack([points[labels == m].sum(axis=0) for m in range(k)])  # (k, slots)
    slot_mode = usage.argmax(axis=0)
    used = usage.sum(axis=0) > 0
    if used.any() and not used.all():
        unit = memory / np.maximum(np.linalg.norm(memory, axis=1, keepdims=True), 1e-12)
        nearest = (unit[~used] @ unit[used].T).argmax(axis=1)
        slot_mode[~used] = slot_mode[used][nearest]
    return slot_mode.astype(np.int64)


def mode_config(
    fit: ModeFit,
    windows: np.ndarray,
    sensors: list[str],
    *,
    source: str,
    novelty_threshold: dict[str, Any],
    combine: str,
) -> dict[str, Any]:
    """The bundle's `modes` section: slot map, per-mode share and typical sensor values
    (median of every reading in the mode's windows, original units), novelty threshold."""
    modes = []
    n = len(fit.window_modes)
    for mode in range(fit.n_modes):
        members = fit.window_modes == mode
        values = windows[members].reshape(-1, windows.shape[2]) if members.any() else None
        modes.append(
            {
                "mode": mode,
                "share": float(members.sum() / max(n, 1)),
                "windows": int(members.sum()),
                "slots": int((fit.slot_mode == mode).sum()),
                "median": {
                    s: (None if values is None else float(np.median(values[:, j])))
                    for j, s in enumerate(sensors)
                },
            }
        )
    return {
        "source": source,
        "n_windows": int(n),
        "unassigned_windows": int((fit.window_modes == NO_MODE).sum()),
        "rule": fit.rule,
        "silhouette": {str(k): (None if np.isnan(v) else round(v, 4)) for k, v in fit.silhouettes.items()},
        "slot_mode": [int(m) for m in fit.slot_mode],
        "modes": modes,
        "novelty": {"measure": NOVELTY_MEASURE, "threshold": novelty_threshold},
        "combine": combine,
    }


def window_novelty(novelty: np.ndarray) -> np.ndarray:
    """(B, L) per-position novelty → (B,) per window (mean over latent positions)."""
    return np.asarray(novelty, dtype=np.float64).mean(axis=1)


@dataclass
class ModeScores:
    """What `analyse_windows` returns for a batch of windows."""

    scores: np.ndarray
    contributions: np.ndarray
    mode: np.ndarray
    novelty: np.ndarray  # raw (not normalised)
    attention: np.ndarray
    encodings: np.ndarray | None


class Modes:
    """The bundle's `modes` section, ready to label windows."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.slot_mode = np.asarray(config["slot_mode"], dtype=np.int64)
        self.n_modes = len(config["modes"])
        self.novelty_threshold = float(config["novelty"]["threshold"]["value"])
        self.combine = str(config.get("combine", DEFAULT_COMBINE))

    @classmethod
    def of(cls, bundle: Any) -> Modes | None:
        """The bundle's modes, or None for a bundle without them (trained before modes existed,
        or without a memory module)."""
        section = bundle.config.get("modes")
        return cls(section) if isinstance(section, dict) else None

    def analyse(self, engine: Any, windows: np.ndarray, encodings: bool = False) -> ModeScores:
        scores, contributions, attention, novelty, z = engine.analyse(windows, encodings)
        return ModeScores(
            scores=np.asarray(scores, dtype=np.float64),
            contributions=np.asarray(contributions, dtype=np.float64),
            mode=assign(attention, self.slot_mode, self.n_modes),
            novelty=window_novelty(novelty),
            attention=attention,
            encodings=z,
        )

    def combined(self, normalised: np.ndarray, novelty_normalised: np.ndarray) -> np.ndarray:
        """The level the alarm decision reads (1.0 = alarm) under the bundle's combine rule."""
        if self.combine == "max":
            return np.fmax(normalised, novelty_normalised)
        return normalised


class MemoryScorer:
    """An engine with the bundle's operating modes and, optionally, a drift follower: what the
    edge daemon scores with, so its mode and novelty fields come from the same code (and the
    same C++ engine) as `memae-ts score`. `score` keeps the plain engine face."""

    def __init__(self, engine: Any, follower: Any = None) -> None:
        self.engine = engine
        self.bundle = engine.bundle
        self.name = getattr(engine, "name", type(engine).__name__)
        self.modes = Modes.of(engine.bundle)
        self.follower = follower
        if self.modes is None and follower is None:
            raise ValueError("a MemoryScorer needs a bundle with modes or a drift follower")

    def analyse(self, windows: np.ndarray) -> ModeScores:
        if self.follower is not None:
            return self.follower.analyse(windows)  # type: ignore[no-any-return]
        assert self.modes is not None
        return self.modes.analyse(self.engine, windows)

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.analyse(windows)
        return result.scores, result.contributions

    def levels(self, result: ModeScores, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
        """(normalised novelty or None, alarm level under the bundle's combine rule)."""
        normalised = result.scores / threshold
        if self.modes is None:
            return None, normalised
        novelty = result.novelty / self.modes.novelty_threshold
        return novelty, self.modes.combined(normalised, novelty)
