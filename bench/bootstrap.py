"""File-level bootstrap confidence intervals for pooled detection metrics.

Why files, not rows: the rows of one file share a model, a threshold and a fault, so they are
far from independent; resampling rows would make the intervals much too narrow. A bootstrap
sample draws whole files with replacement (SKAB: 34 files), pools their test rows exactly as
the benchmark does, and recomputes each metric. With several seeds, each seed's metric is
computed on the same drawn files and the seeds are averaged, so the interval is for the
seed-averaged figure, and a paired difference (MemAE − AE on the same draws) answers "is A
better than B on these files" with the file-to-file variation taken into account.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from memae_ts.evaluation.metrics import confusion_counts, rates, roc_auc


@dataclass
class FileScores:
    """One file's test part: 0/1 labels and normalised scores (NaN = no alarm, no score); with
    `alarms` (an alarm rule's decisions) the counts come from those, ROC-AUC from the scores."""

    labels: np.ndarray
    scores: np.ndarray
    alarms: np.ndarray | None = None

    def counts(self, threshold: float = 1.0) -> np.ndarray:
        cached = self.__dict__.get("_counts")
        if cached is not None and cached[0] == threshold:
            return cached[1]  # a bootstrap asks for the same file's counts many times
        self.__dict__["_counts"] = (threshold, self._count(threshold))
        return self.__dict__["_counts"][1]

    def _count(self, threshold: float) -> np.ndarray:
        if self.alarms is not None:
            predictions = np.asarray(self.alarms, dtype=bool)
        else:
            predictions = np.nan_to_num(self.scores, nan=-np.inf) >= threshold
        c = confusion_counts(self.labels, predictions.astype(np.int64))
        return np.array([c["tp"], c["fp"], c["tn"], c["fn"]], dtype=np.int64)


METRICS = ("f1", "far", "mar", "roc_auc")


def pooled_metrics(files: Sequence[FileScores], with_auc: bool = True) -> dict[str, float]:
    """F1, FAR, MAR from pooled counts; ROC-AUC of the pooled scores (unscored rows lowest)."""
    total = np.sum([f.counts() for f in files], axis=0)
    out = rates(dict(zip(("tp", "fp", "tn", "fn"), (int(v) for v in total), strict=True)))
    if with_auc:
        labels = np.concatenate([f.labels for f in files])
        scores = np.concatenate([f.scores for f in files])
        scored = np.isfinite(scores)
        floor = (np.min(scores[scored]) - 1.0) if scored.any() else 0.0
        out["roc_auc"] = roc_auc(labels, np.where(scored, scores, floor))
    return {k: out[k] for k in METRICS if k in out}


def _draw(n_files: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_files, size=(n_boot, n_files))


def seed_mean(runs: Sequence[Sequence[FileScores]], draw: np.ndarray | None = None) -> dict[str, float]:
    """Each metric averaged over seeds (`runs[seed][file]`), on `draw` (file indices) if given."""
    per_seed = []
    for files in runs:
        chosen = files if draw is None else [files[i] for i in draw]
        per_seed.append(pooled_metrics(chosen))
    return {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}


def intervals(
    variants: dict[str, Sequence[Sequence[FileScores]]],
    pairs: Sequence[tuple[str, str]] = (),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Seed-averaged metric and its percentile interval per variant, and for each (a, b) in
    `pairs` the paired difference a − b with its interval and the share of draws where a > b.

    Every variant must list the same files in the same order (they are drawn together)."""
    names = list(variants)
    n_files = {len(runs[0]) for runs in variants.values()}
    if len(n_files) != 1:
        raise ValueError(f"variants hold different numbers of files: {n_files}")
    draws = _draw(n_files.pop(), n_boot, seed)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for b, draw in enumerate(draws):
        for name in names:
            samples[name].append(seed_mean(variants[name], draw))
        if progress is not None:
            progress(b)
    low, high = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        point = seed_mean(variants[name])
        out[name] = {}
        for key in point:
            values = np.array([s[key] for s in samples[name]])
            out[name][key] = {
                "value": point[key],
                "low": float(np.nanpercentile(values, low)),
                "high": float(np.nanpercentile(values, high)),
            }
    for a, b in pairs:
        key_name = f"{a} - {b}"
        out[key_name] = {}
        point_a, point_b = seed_mean(variants[a]), seed_mean(variants[b])
        for key in point_a:
            diff = np.array([sa[key] - sb[key] for sa, sb in zip(samples[a], samples[b], strict=True)])
            out[key_name][key] = {
                "value": point_a[key] - point_b[key],
                "low": float(np.nanpercentile(diff, low)),
                "high": float(np.nanpercentile(diff, high)),
                "share_a_above": float(np.mean(diff > 0)),
            }
    return out


def format_interval(cell: dict[str, float], percent: bool = False, digits: int = 3) -> str:
    scale = 100.0 if percent else 1.0
    d = 1 if percent else digits
    return f"{scale * cell['value']:.{d}f} [{scale * cell['low']:.{d}f}, {scale * cell['high']:.{d}f}]"
