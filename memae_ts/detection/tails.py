"""Tail probabilities and false-alarm budgets from normal windows (the calibration slice).

Two questions an operator asks that a normalised score cannot answer:

* *How unusual is this window?* :class:`TailModel` gives every score a **tail probability**:
  the share of normal windows expected at or above it. It is the calibration slice's empirical
  survival function up to a high level ``u``, and above ``u`` a generalised Pareto tail
  (peaks over threshold) fitted to **declustered** exceedances: windows that share readings are
  not independent, so the exceedances are grouped into clusters (runs closer than a window
  length) and only each cluster's maximum is fitted. The model is a table of at most
  :data:`MAX_KNOTS` (score, probability) pairs plus the GPD parameters, stored in the bundle;
  evaluating it needs numpy only (the gateway has no scipy), and it is monotone: a higher score
  never gets a higher probability. Because the probability means the same for every model, a
  fleet dashboard can rank assets by it and one alert rule serves every model.

* *How many alarms a day will this threshold give on normal operation?* :class:`EpisodeRate`
  answers it **after the alarm rule** (memae_ts.detection.alarms), because an episode is what the
  operator experiences: the rule raises an alarm at threshold x exactly when the persisted
  score (the k-th largest of the last n window scores of a stretch) reaches x, so the episodes
  at x are the clusters of the persisted score above x. Within what the slice can show, the
  rate is counted by running the rule itself; for rarer budgets the cluster maxima of the
  persisted score get a GPD tail (declustered POT). :func:`budget_threshold` inverts it: the
  threshold whose expected episode rate equals a false-alarm budget.

Why the shape is floored at 0 (an exponential tail at the lightest): a negative fitted shape
claims a finite largest possible score, and from a slice of a few thousand windows that claim
is not trustworthy; it would also give every score beyond the end point probability 0 and
leave nothing to rank. The fitted shape is stored beside the one used.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from memae_ts.detection.alarms import AlarmRule, AlarmState
from memae_ts.errors import DataError

MAX_KNOTS = 128  # (score, probability) pairs stored in the bundle
TAIL_QUANTILE = 0.98  # u: the GPD describes the top 2 % of windows
MIN_CLUSTERS = 10  # fewer cluster maxima above u: no GPD, the empirical tail only
MIN_EMPIRICAL_EPISODES = 5  # a budget allowing this many episodes in the slice is counted, not fitted
SECONDS_PER_DAY = 86_400.0


def decluster(values: np.ndarray, new_stretch: np.ndarray, u: float, run: int) -> np.ndarray:
    """Maxima of the clusters of ``values > u``: exceedances closer than ``run`` positions
    within one stretch belong to one cluster (runs declustering, Smith & Weissman 1994)."""
    above = np.flatnonzero(np.isfinite(values) & (values > u))
    if above.size == 0:
        return np.empty(0)
    stretch_id = np.cumsum(np.asarray(new_stretch, dtype=np.int64))
    starts = np.ones(above.size, dtype=bool)
    starts[1:] = (np.diff(above) > run) | (stretch_id[above[1:]] != stretch_id[above[:-1]])
    return np.maximum.reduceat(values[above], np.flatnonzero(starts))


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of a generalised Pareto fitted to positive excesses (scipy, at fit time)."""
    from scipy.stats import genpareto

    excesses = np.asarray(excesses, dtype=np.float64)
    if np.ptp(excesses) == 0:  # all equal: an exponential with that mean
        return 0.0, float(max(excesses.mean(), 1e-300))
    shape, _, scale = genpareto.fit(excesses, floc=0.0)
    return float(shape), float(scale)


def gpd_sf(x: np.ndarray, shape: float, scale: float) -> np.ndarray:
    """P(excess >= x) of a GPD (x >= 0), numpy only."""
    z = np.maximum(np.asarray(x, dtype=np.float64), 0.0) / scale
    if abs(shape) < 1e-12:
        return np.exp(-z)
    with np.errstate(over="ignore", divide="ignore"):
        return np.power(np.maximum(1.0 + shape * z, 0.0), -1.0 / shape)


def gpd_isf(p: float, shape: float, scale: float) -> float:
    """The excess whose survival is p (0 < p <= 1)."""
    if abs(shape) < 1e-12:
        return -scale * math.log(p)
    return scale / shape * (p ** (-shape) - 1.0)


@dataclass(frozen=True)
class TailModel:
    """Share of normal windows at or above a raw score (see the module docstring)."""

    knots: tuple[float, ...]  # ascending scores
    survival: tuple[float, ...]  # P(score >= knot), non-increasing
    n: int  # calibration windows
    method: str  # "gpd" (fitted tail above the last knot) or "empirical"
    u: float | None = None
    p_u: float | None = None
    shape: float | None = None  # the shape used (fitted, floored at 0)
    scale: float | None = None
    fitted_shape: float | None = None
    clusters: int = 0

    @classmethod
    def fit(cls, scores: np.ndarray, new_stretch: np.ndarray | None, run: int) -> TailModel:
        """From the calibration windows' raw scores in time order; ``run`` (the window length)
        is how far apart two exceedances must be to count as separate clusters."""
        s = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(s)
        s_all, s = s, s[finite]
        if s.size == 0:
            raise DataError("no calibration windows for the tail probability")
        stretch = np.zeros(s_all.size, bool) if new_stretch is None else np.asarray(new_stretch, bool)
        n = s.size
        ordered = np.sort(s)
        u = float(np.quantile(ordered, TAIL_QUANTILE))
        maxima = decluster(np.where(finite, s_all, np.nan), stretch, u, run)
        probs = np.geomspace(1.0, 1.0 / n, MAX_KNOTS)
        gpd = maxima.size >= MIN_CLUSTERS and u < ordered[-1]
        if gpd:
            p_u = float(np.mean(s > u))
            probs = np.geomspace(1.0, max(p_u, 1.0 / n), MAX_KNOTS - 1)
        knots = np.unique(np.quantile(ordered, 1.0 - probs, method="inverted_cdf"))
        if gpd:
            knots = np.unique(np.append(knots[knots < u], u))
        # Exact share of calibration windows at or above each knot.
        survival = (n - np.searchsorted(ordered, knots, side="left")) / n
        if not gpd:
            return cls(
                tuple(knots.tolist()), tuple(survival.tolist()), n, "empirical", clusters=int(maxima.size)
            )
        fitted, scale = fit_gpd(maxima - u)
        survival[-1] = p_u  # above u the fitted tail takes over, from the share strictly above u
        return cls(
            tuple(knots.tolist()),
            tuple(survival.tolist()),
            n,
            "gpd",
            u=u,
            p_u=p_u,
            shape=max(fitted, 0.0),
            scale=scale,
            fitted_shape=fitted,
            clusters=int(maxima.size),
        )

    def tail_probability(self, scores: np.ndarray) -> np.ndarray:
        """P(normal window score >= s) for each s; NaN stays NaN. Log-linear between knots,
        1 below the lowest, the GPD above u (or 1/(n+1) beyond the largest calibration score
        when no tail was fitted)."""
        s = np.asarray(scores, dtype=np.float64)
        knots = np.asarray(self.knots)
        logs = np.log(np.asarray(self.survival))
        out = np.exp(np.interp(s, knots, logs, left=0.0, right=logs[-1]))
        beyond = s > knots[-1]
        if self.method == "gpd":
            assert self.u is not None and self.p_u is not None and self.shape is not None
            assert self.scale is not None
            out[beyond] = self.p_u * gpd_sf(s[beyond] - self.u, self.shape, self.scale)
        else:
            out[beyond] = min(float(np.exp(logs[-1])), 1.0 / (self.n + 1))
        out = np.maximum(out, np.finfo(np.float64).tiny)
        out[np.isnan(s)] = np.nan
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_windows": self.n,
            "knots": list(self.knots),
            "survival": list(self.survival),
            "u": self.u,
            "p_u": self.p_u,
            "gpd_shape": self.shape,
            "gpd_scale": self.scale,
            "gpd_fitted_shape": self.fitted_shape,
            "clusters": self.clusters,
        }

    @classmethod
    def from_config(cls, raw: Any) -> TailModel | None:
        """The stored model, or None for a bundle without one (written before tail
        probabilities existed: its score records carry ``tail_probability: null``)."""
        if raw is None:
            return None
        try:
            knots = tuple(float(x) for x in raw["knots"])
            survival = tuple(float(x) for x in raw["survival"])
            model = cls(
                knots,
                survival,
                int(raw["n_windows"]),
                str(raw["method"]),
                u=None if raw.get("u") is None else float(raw["u"]),
                p_u=None if raw.get("p_u") is None else float(raw["p_u"]),
                shape=None if raw.get("gpd_shape") is None else float(raw["gpd_shape"]),
                scale=None if raw.get("gpd_scale") is None else float(raw["gpd_scale"]),
                fitted_shape=None if raw.get("gpd_fitted_shape") is None else float(raw["gpd_fitted_shape"]),
                clusters=int(raw.get("clusters", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bundle tail model is malformed: {exc}") from exc
        ok = (
            0 < len(knots) == len(survival) <= 4 * MAX_KNOTS
            and all(math.isfinite(x) for x in knots + survival)
            and all(a < b for a, b in itertools.pairwise(knots))
            and all(0 < p <= 1 for p in survival)
            and all(a >= b for a, b in itertools.pairwise(survival))
            and model.method in ("gpd", "empirical")
        )
        if ok and model.method == "gpd":
            ok = (
                model.scale is not None
                and model.scale > 0
                and model.shape is not None
                and model.shape >= 0
                and model.p_u is not None
                and 0 < model.p_u <= 1
            )
        if not ok:
            raise DataError(
                "bundle tail model is malformed: knots must ascend, probabilities in (0, 1] descend"
            )
        return model


def persisted(scores: np.ndarray, new_stretch: np.ndarray, k: int, n: int) -> np.ndarray:
    """The k-th largest of the last n scores within each stretch (-inf while fewer than k):
    the alarm rule with threshold x raises an alarm at a window exactly when this reaches x."""
    s = np.where(np.isfinite(scores), np.asarray(scores, dtype=np.float64), -np.inf)
    out = np.full(s.size, -np.inf)
    bounds = [*np.flatnonzero(new_stretch).tolist(), s.size]
    if not bounds or bounds[0] != 0:
        bounds = [0, *bounds]
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        padded = np.concatenate([np.full(n - 1, -np.inf), s[lo:hi]])
        view = sliding_window_view(padded, n)
        out[lo:hi] = -np.partition(-view, k - 1, axis=1)[:, k - 1]
    return out


def count_episodes(scores: np.ndarray, new_stretch: np.ndarray, rule: AlarmRule, threshold: float) -> int:
    """Episodes the rule raises on these windows at this threshold (running the rule itself)."""
    state = AlarmState(rule)
    events = state.run(np.arange(scores.size, dtype=np.float64), scores / threshold, None, new_stretch)
    return len(events.opened)


@dataclass(frozen=True)
class EpisodeRate:
    """Expected alarm episodes per window on normal operation, as a function of the threshold."""

    scores: np.ndarray
    new_stretch: np.ndarray
    rule: AlarmRule
    seconds_per_window: float | None
    u: float | None
    rate_u: float | None  # clusters of the persisted score above u, per window
    shape: float | None
    scale: float | None
    fitted_shape: float | None
    clusters: int

    @classmethod
    def fit(
        cls, scores: np.ndarray, new_stretch: np.ndarray, rule: AlarmRule, seconds_per_window: float | None
    ) -> EpisodeRate:
        scores = np.asarray(scores, dtype=np.float64)
        stretch = np.asarray(new_stretch, dtype=bool).copy()
        if stretch.size:
            stretch[0] = True
        m = persisted(scores, stretch, rule.k, rule.n)
        finite = m[np.isfinite(m)]
        run = rule.n + rule.min_windows  # closer maxima would be merged into one episode by the rule
        if finite.size:
            # A high u first; on a short slice lower ones, down to the median, before giving up.
            for q in (TAIL_QUANTILE, 0.95, 0.9, 0.75, 0.5):
                u = float(np.quantile(finite, q))
                maxima = decluster(m, stretch, u, run)
                if maxima.size >= MIN_CLUSTERS:
                    fitted, scale = fit_gpd(maxima - u)
                    return cls(
                        scores, stretch, rule, seconds_per_window, u, maxima.size / scores.size,
                        max(fitted, 0.0), scale, fitted, int(maxima.size),
                    )  # fmt: skip
        return cls(scores, stretch, rule, seconds_per_window, None, None, None, None, None, 0)

    def _persisted(self) -> np.ndarray:
        m = persisted(self.scores, self.new_stretch, self.rule.k, self.rule.n)
        return m[np.isfinite(m)]

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def counted(self, threshold: float) -> int:
        return count_episodes(self.scores, self.new_stretch, self.rule, threshold)

    def per_window(self, threshold: float) -> tuple[float, str]:
        """(expected episodes per window, how it was obtained: 'counted' or 'gpd'; 'bound' when
        none was seen and no tail was fitted: then the rate is below 1 per slice, given as that)."""
        seen = self.counted(threshold)
        if seen >= MIN_EMPIRICAL_EPISODES or self.u is None or threshold <= self.u:
            if seen == 0 and self.u is None:
                return 1.0 / max(self.n, 1), "bound"
            return seen / max(self.n, 1), "counted"
        assert self.rate_u is not None and self.shape is not None and self.scale is not None
        return float(self.rate_u * gpd_sf(np.array([threshold - self.u]), self.shape, self.scale)[0]), "gpd"

    def report(self, threshold: float) -> dict[str, Any]:
        """What budget this threshold corresponds to, for the bundle and `memae-ts info`."""
        rate, how = self.per_window(threshold)
        out: dict[str, Any] = {
            "episodes_per_1000_windows": rate * 1000,
            "estimated_by": how,
            "calibration_windows": self.n,
            "calibration_episodes": self.counted(threshold),
            "rule": self.rule.to_config(),
        }
        if self.seconds_per_window:
            out["episodes_per_day"] = rate * SECONDS_PER_DAY / self.seconds_per_window
            out["calibration_days"] = self.n * self.seconds_per_window / SECONDS_PER_DAY
        if self.u is not None:
            out["pot"] = {
                "u": self.u,
                "u_quantile": float(np.mean(self._persisted() <= self.u)),
                "clusters": self.clusters,
                "rate_u": self.rate_u,
                "gpd_shape": self.shape,
                "gpd_scale": self.scale,
                "gpd_fitted_shape": self.fitted_shape,
            }
        return out


def budget_threshold(rate: EpisodeRate, per_window: float) -> tuple[float, str]:
    """The threshold (raw score) whose expected episodes per window is ``per_window``, and how
    it was found: 'counted' (the rule run on the slice, bisection on the threshold), 'gpd'
    (declustered POT, the budget being rarer than the slice shows often enough to count), or
    'max' (too few clusters for a tail: the largest persisted score, which gives at most one
    episode in the slice; the report then states the rate that threshold corresponds to)."""
    if not (per_window > 0 and math.isfinite(per_window)):
        raise DataError(f"false-alarm budget must be a positive number, got {per_window}")
    m = persisted(rate.scores, rate.new_stretch, rate.rule.k, rate.rule.n)
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        raise DataError("no calibration window sequence long enough for the alarm rule")
    allowed = per_window * rate.n
    top = float(finite.max())
    floor = float(np.finfo(np.float32).tiny) * 1e6
    if allowed >= MIN_EMPIRICAL_EPISODES:
        # Episodes rise as the threshold comes down from the top, then fall again when the
        # alarm merges into one long one: walk down a grid of the persisted score's quantiles
        # to the first level with too many, then bisect between it and the level above.
        grid = np.unique(np.quantile(finite, np.linspace(1.0, 0.0, 201)))[::-1]
        hi = top * (1 + 1e-9) + floor
        lo = None
        for level in grid:
            level = max(float(level), floor)
            if rate.counted(level) > allowed:
                lo = level
                break
            hi = level
        if lo is None:
            return hi, "counted"
        for _ in range(60):  # the smallest threshold above `lo` with at most `allowed` episodes
            mid = 0.5 * (lo + hi)
            if rate.counted(mid) <= allowed:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-9 * hi:
                break
        return hi, "counted"
    if rate.u is not None and rate.rate_u is not None and per_window < rate.rate_u:
        assert rate.shape is not None and rate.scale is not None
        return rate.u + gpd_isf(per_window / rate.rate_u, rate.shape, rate.scale), "gpd"
    return top * (1 + 1e-9) + floor, "max"
