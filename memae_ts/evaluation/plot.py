"""The diagnosis plot: one machine, the sensors that explain its alarms, and why.

A plot of the first eight sensors of a file tells an operator little: the model already knows
which sensors it failed to reconstruct. This module builds one view per asset (:func:`diagnose`)
and draws it as a PNG (matplotlib) or one self-contained interactive HTML file (plotly):

* the **sensor panels** are chosen by their summed share of the reconstruction error over the
  alarmed windows (the alarm rule's, :mod:`memae_ts.detection.alarms`); with no alarm in view they are the
  sensors furthest from their training level (mean squared deviation in training spreads). The
  subtitle says which rule chose them;
* **lines break at gaps**: a NaN is inserted where the time step exceeds the model's gap rule
  (its ``max_gap_seconds``, or the resampling grid step) and between assets, so no line runs
  across an outage or from one machine into the next. Missing readings stay missing (NaN);
* a **share strip** shows each chosen sensor's share of the reconstruction error over time (the
  rest summed as "other sensors");
* **alarm episodes** are shaded and numbered; a list under the picture names each one's top
  sensors. Labelled anomalies (with ``--label-column``) are shaded orange;
* when the scores carry an operating **mode** per row (the model found modes), a mode strip.

Nothing is capped silently: sensors not shown, episodes not named and gaps broken are counted
in the subtitle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memae_ts.detection.alarms import AlarmRule, apply_rule
from memae_ts.detection.scoring import RowScores
from memae_ts.errors import DataError, MissingDependencyError
from memae_ts.io.data import SensorData

DEFAULT_PANELS = 6
MAX_NAMED_EPISODES = 9  # numbered and listed under the picture; the rest are shaded only
TOP_EPISODE_SENSORS = 3
SHARE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#d62728",
)  # fmt: skip
OTHER_COLOR = "#d9d9d9"
EPISODE_COLOR = "#d62728"
LABEL_COLOR = "#ff7f0e"
PLOT_EXTRA = "pip install 'memae-ts[plot]'"


@dataclass
class EpisodeMark:
    """An alarm episode as drawn: rows [start, stop) of the view, its top sensors and peak."""

    number: int  # 1-based, in time order; 0 = shaded but not named (beyond MAX_NAMED_EPISODES)
    start: int
    stop: int
    peak: float
    top: list[tuple[str, float]]
    end_reason: str

    def describe(self, x: np.ndarray) -> str:
        sensors = ", ".join(f"{name} {share:.0%}" for name, share in self.top)
        ended = {"gap": " (ended by a gap in the data)", "open": " (still on at the end of the data)"}
        return (
            f"{self.number}: {_fmt_x(x[self.start])} .. {_fmt_x(x[self.stop - 1])}, peak {self.peak:.3g}; "
            f"{sensors}{ended.get(self.end_reason, '')}"
        )


@dataclass
class DiagnosisView:
    """Everything one figure shows, computed once and drawn by either renderer. Arrays named
    ``*_broken`` have NaN rows inserted at the gaps (``breaks``), the others are row-aligned."""

    title: str
    subtitle: list[str]
    asset: str | None
    x: np.ndarray  # datetime64[ns] (UTC, naive) or row numbers
    time_axis: bool
    sensors: list[str]  # the panels, in rank order
    panel_shares: list[float | None]  # each panel's share of the alarmed error (None: variance rule)
    values: np.ndarray  # (rows, panels) raw readings of the chosen sensors
    shares: np.ndarray  # (rows, panels + 1) share of the error, last column = other sensors
    normalised: np.ndarray
    breaks: np.ndarray  # positions i where a NaN goes before row i (a gap or an asset change)
    episodes: list[EpisodeMark]
    labelled: list[tuple[int, int]]
    modes: np.ndarray | None = None
    novelty: np.ndarray | None = None  # normalised novel-mode score (a bundle with modes)
    rule: str = ""
    n_gaps: int = 0
    episode_lines: list[str] = field(default_factory=list)

    def broken(self, values: np.ndarray) -> np.ndarray:
        """`values` (rows first) with NaN inserted at the gaps: matplotlib and plotly end a line
        at a NaN, so no line is drawn across an outage or from one asset into the next."""
        if not self.breaks.size:
            return np.asarray(values, dtype=np.float64)
        return np.insert(np.asarray(values, dtype=np.float64), self.breaks, np.nan, axis=0)

    @property
    def x_broken(self) -> np.ndarray:
        """x with a point in the middle of each gap (its y values are NaN)."""
        if not self.breaks.size:
            return self.x
        before, after = self.x[self.breaks - 1], self.x[self.breaks]
        middle = before + (after - before) / 2
        return np.insert(self.x, self.breaks, middle)


def gap_seconds(config: dict[str, Any]) -> float | None:
    """The model's gap rule: a step longer than this ends a stretch. A resampled model's grid has
    one row per period, so a step over the period (with rounding slack) is a missing grid row."""
    resample = config.get("resample")
    if resample:
        return float(resample["period_seconds"]) * 1.5
    gap = config.get("max_gap_seconds")
    return None if gap is None else float(gap)


def rank_sensors(
    sensors: list[str],
    values: np.ndarray,
    contributions: np.ndarray,
    alarm: np.ndarray,
    center: np.ndarray | None,
    scale: np.ndarray | None,
) -> tuple[list[int], list[float | None], str]:
    """Sensor order for the panels, each one's share, and the rule that chose it (for the
    subtitle). Alarmed windows: summed share of the reconstruction error (each window's shares sum
    to 1, so a long mild episode and a short violent one weigh by duration, not by the size of the
    error). No alarm: mean squared deviation from the training level in training spreads."""
    rows = alarm & np.all(np.isfinite(contributions), axis=1)
    if rows.any():
        c = contributions[rows]
        totals = c.sum(axis=1, keepdims=True)
        share = np.divide(c, totals, out=np.zeros_like(c), where=totals > 0).sum(axis=0)
        share = share / (float(share.sum()) or 1.0)
        order = [int(j) for j in np.argsort(-share, kind="stable")]
        return (
            order,
            [float(share[j]) for j in order],
            f"summed share of the error over {int(rows.sum())} alarmed windows",
        )
    if center is None or scale is None:
        center = np.nanmean(values, axis=0)
        scale = np.nanstd(values, axis=0)
        what = "variance (no alarm in view)"
    else:
        what = "distance from the training level, in training spreads (no alarm in view)"
    safe = np.where(np.asarray(scale) > 0, scale, 1.0)
    with np.errstate(invalid="ignore"):
        deviation = ((values - center) / safe) ** 2
    finite = np.isfinite(deviation)
    spread = np.where(
        finite.any(axis=0), np.nansum(deviation, axis=0) / np.maximum(finite.sum(axis=0), 1), -1.0
    )
    order = [int(j) for j in np.argsort(-spread, kind="stable")]
    return order, [None] * len(order), what


def parse_bound(
    text: str, option: str, data: SensorData, tz: str | None, dayfirst: bool | None
) -> pd.Timestamp:
    """--start/--end read like the data's time column: its format (or ISO 8601), and naive times in
    the data's time zone (--tz, else UTC). A value that cannot be read is one line naming the
    option and an example of the data's own times."""
    from memae_ts.io.timeparse import ISO_FORMAT, parse_time_column

    time = data.summary.time or {}
    fmt = str(time.get("format", ""))
    formats = [fmt] if "%" in fmt else []
    formats.append(ISO_FORMAT)
    for candidate in formats:
        try:
            index, _ = parse_time_column(
                pd.Series([text.strip()]),
                source=option,
                column=option,
                rows=np.array([0]),
                time_format=candidate,
                dayfirst=dayfirst,
                tz=tz,
            )
        except (DataError, ValueError):
            continue
        return pd.Timestamp(index[0])
    examples = time.get("examples") or []
    example = f" such as {examples[0][0]!r}" if examples else ""
    raise DataError(f"{option} {text!r}: not a time like the data's{example} or ISO 8601 (2026-11-02T06:00)")


def choose_assets(
    data: SensorData, alarmed: dict[str, int], asset: str | None
) -> tuple[list[str | None], str]:
    """Which assets get a figure, and a note for the user when the choice was made for them.

    One asset (or none): that one. `--asset NAME`: that one (an unknown name is an error listing
    the known ones). `--asset all`: every asset, one file each. Several assets and no option: the
    one with the most alarmed windows, and the note says so and how to pick another."""
    if data.assets is None:
        if asset not in (None, "all"):
            raise DataError(f"--asset {asset}: {data.source} has no asset column (pass --asset-column)")
        return [None], ""
    names = [str(a) for a in pd.unique(data.assets)]
    if asset == "all":
        return list(names), ""
    if asset is not None:
        if asset not in names:
            shown = ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")
            raise DataError(f"--asset {asset}: no such asset in {data.source}; assets: {shown}")
        return [asset], ""
    if len(names) == 1:
        return names, ""
    best = max(names, key=lambda name: (alarmed.get(name, 0), -names.index(name)))
    note = (
        f"{data.source} holds {len(names)} assets; plotted {best} "
        f"({alarmed.get(best, 0)} alarmed windows, the most); --asset NAME for another, --asset all for each"
    )
    return [best], note


def alarmed_windows(
    data: SensorData, result: RowScores, rule: AlarmRule, max_gap_seconds: float | None
) -> dict[str, int]:
    """Alarmed windows per asset by the alarm rule (what picks the default asset)."""
    if data.assets is None:
        return {}
    out = {}
    for name in pd.unique(data.assets):
        rows = np.flatnonzero(data.assets == name)
        alarm, _ = _alarms_of(data, result, rows, rule, max_gap_seconds)
        out[str(name)] = int(alarm.sum())
    return out


def _alarms_of(
    data: SensorData, result: RowScores, rows: np.ndarray, rule: AlarmRule, max_gap_seconds: float | None
) -> tuple[np.ndarray, list[Any]]:
    """The alarm flag of `rows` and their episodes with start/end as positions in `rows`.

    Scores from ``MemAE.score_rows`` carry the alarm rule's decision and episodes (what `score`
    writes and the daemon sends): those are used, so the picture and the tables agree. Scores
    without them (built by hand) get the rule applied here, by `apply_rule` (the same AlarmState)."""
    episodes_in = getattr(result, "episodes", None)
    alarm = getattr(result, "alarm", None)
    if alarm is None:
        level = np.asarray(getattr(result, "alarm_level", result.normalised), dtype=np.float64)
        # Row positions as times: episode start/end are positions in `rows`.
        return apply_rule(
            level[rows],
            rule,
            new_stretch=_stretch_starts(data, rows, max_gap_seconds),
            contributions=np.nan_to_num(result.contributions[rows], nan=0.0),
        )
    if data.timestamps is not None:
        times = data.timestamps[rows].as_unit("ns").asi8 / 1e9  # as memae_ts.detection.alarms.apply_alarms
    else:
        times = np.asarray(data.row_numbers[rows], dtype=np.float64)
    assets = None if data.assets is None else data.assets[rows].astype(str)
    out = []
    for episode in episodes_in or []:
        mine = np.arange(rows.size) if assets is None else np.flatnonzero(assets == episode.asset)
        if mine.size == 0:
            continue
        t = times[mine]
        lo, hi = np.searchsorted(t, episode.start, "left"), np.searchsorted(t, episode.end, "right") - 1
        if lo >= mine.size or hi < 0 or t[lo] > episode.end:
            continue
        out.append(replace(episode, start=float(mine[lo]), end=float(mine[max(hi, lo)])))
    return np.asarray(alarm, dtype=bool)[rows], out


def _fmt_x(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")
    return str(int(value))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where mask is True."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def diagnose(
    data: SensorData,
    result: RowScores,
    *,
    asset: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    max_gap_seconds: float | None = None,
    rule: AlarmRule | None = None,
    center: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    panels: int = DEFAULT_PANELS,
    sensors: list[str] | None = None,
    title: str | None = None,
    modes: np.ndarray | None = None,
) -> DiagnosisView:
    """The view of one asset (None: the whole file, which must then have no asset column or one
    asset) between `start` and `end` (inclusive, UTC)."""
    rule = rule or AlarmRule()
    n = len(data)
    if data.assets is not None and asset is not None:
        rows = np.flatnonzero(data.assets == asset)
    else:
        rows = np.arange(n)
    # The alarm rule runs over the asset's whole series, so an episode that started before
    # --start is on when the view opens, as it was on the plant.
    alarm_rows, episodes = _alarms_of(data, result, rows, rule, max_gap_seconds)
    view = np.ones(rows.size, dtype=bool)
    if data.timestamps is not None:
        times = data.timestamps[rows]
        if start is not None:
            view &= np.asarray(times >= start)
        if end is not None:
            view &= np.asarray(times <= end)
    elif start is not None or end is not None:
        raise DataError(f"--start/--end: {data.source} has no time column to select by")
    if not view.any():
        span = ""
        if data.timestamps is not None and rows.size:
            span = (
                f" (its rows run {_fmt_x(_x_of(data, rows[:1])[0])} .. {_fmt_x(_x_of(data, rows[-1:])[0])})"
            )
        who = f"asset {asset}" if asset is not None else data.source
        raise DataError(f"--start/--end: no rows of {who} in that time range{span}")
    first, last = int(np.flatnonzero(view)[0]), int(np.flatnonzero(view)[-1]) + 1
    picked = rows[first:last]
    alarm = alarm_rows[first:last]
    x = _x_of(data, picked)

    values = np.asarray(data.values[picked], dtype=np.float64)
    contributions = result.contributions[picked]
    if sensors:
        unknown = [s for s in sensors if s not in data.sensors]
        if unknown:
            raise DataError(f"--sensor {unknown[0]}: not a sensor of this model ({', '.join(data.sensors)})")
        order = [data.sensors.index(s) for s in sensors]
        panel_shares: list[float | None] = [None] * len(order)
        how = "chosen with --sensor"
    else:
        order_all, shares_all, how = rank_sensors(data.sensors, values, contributions, alarm, center, scale)
        order, panel_shares = order_all[:panels], shares_all[:panels]

    with np.errstate(invalid="ignore", divide="ignore"):
        totals = contributions.sum(axis=1, keepdims=True)
        share_all = contributions / np.where(totals > 0, totals, np.nan)
    chosen = share_all[:, order]
    other = 1.0 - chosen.sum(axis=1, keepdims=True)
    shares = np.concatenate([chosen, np.clip(other, 0.0, 1.0)], axis=1)

    breaks = _breaks(data, picked, max_gap_seconds)
    marks = _episode_marks(episodes, first, last, data.sensors)
    labelled = _runs(data.labels[picked] == 1) if data.labels is not None else []

    name = asset if asset is not None else None
    head = title or data.source
    if name is not None:
        head = f"{head} — asset {name}"
    subtitle = [
        f"{_fmt_x(x[0])} .. {_fmt_x(x[-1])}{' UTC' if data.timestamps is not None else ' (rows)'}, "
        f"{picked.size} rows; {len(marks)} alarm episode(s) by the rule {rule.k} of {rule.n} >= "
        f"{rule.raise_level:g}",
        f"panels: {len(order)} of {len(data.sensors)} sensors by {how}",
    ]
    gap_rule = f"time steps over {max_gap_seconds:g} s" if max_gap_seconds is not None else "no time gap rule"
    subtitle.append(f"lines broken at {breaks.size} gap(s) ({gap_rule}); missing readings left empty")
    named = [m for m in marks if m.number]
    if len(named) < len(marks):
        subtitle.append(f"{len(named)} of {len(marks)} episodes numbered (highest peaks); all are shaded")
    novelty = getattr(result, "novelty", None)
    mode_rows = None
    if modes is None:  # the scores' own operating mode per row (a bundle with modes), else none
        modes = getattr(result, "mode", None)
    if modes is not None:
        mode_rows = np.asarray(modes, dtype=np.float64)[picked]
    return DiagnosisView(
        title=head,
        subtitle=subtitle,
        asset=name,
        x=x,
        time_axis=data.timestamps is not None,
        sensors=[data.sensors[j] for j in order],
        panel_shares=panel_shares,
        values=values[:, order],
        shares=shares,
        normalised=np.asarray(result.normalised[picked], dtype=np.float64),
        novelty=None if novelty is None else np.asarray(novelty, dtype=np.float64)[picked],
        breaks=breaks,
        episodes=marks,
        labelled=labelled,
        modes=mode_rows,
        rule=how,
        n_gaps=int(breaks.size),
        episode_lines=[m.describe(x) for m in named],
    )


def _x_of(data: SensorData, rows: np.ndarray) -> np.ndarray:
    if data.timestamps is None:
        return data.row_numbers[rows].astype(np.float64)
    return data.timestamps[rows].tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _stretch_starts(data: SensorData, rows: np.ndarray, max_gap_seconds: float | None) -> np.ndarray:
    out = np.zeros(rows.size, dtype=bool)
    if rows.size:
        out[_breaks(data, rows, max_gap_seconds)] = True
        out[0] = True
    return out


def _breaks(data: SensorData, rows: np.ndarray, max_gap_seconds: float | None) -> np.ndarray:
    """Positions i (into `rows`) where row i starts after a gap or belongs to another asset."""
    if rows.size < 2:
        return np.zeros(0, dtype=np.int64)
    cut = np.zeros(rows.size - 1, dtype=bool)
    if data.assets is not None:
        assets = data.assets[rows]
        cut |= assets[1:] != assets[:-1]
    if data.timestamps is not None and max_gap_seconds is not None:
        ns = data.timestamps[rows].as_unit("ns").asi8
        cut |= np.diff(ns) / 1e9 > max_gap_seconds
    elif data.timestamps is None:
        cut |= np.diff(data.row_numbers[rows]) > 1
    return np.flatnonzero(cut) + 1


def _episode_marks(episodes: list[Any], first: int, last: int, sensors: list[str]) -> list[EpisodeMark]:
    """Episodes overlapping rows [first, last) of the asset, clipped to the view; the
    MAX_NAMED_EPISODES with the highest peaks are numbered in time order."""
    marks = []
    for episode in episodes:
        lo, hi = int(episode.start), int(episode.end) + 1
        if hi <= first or lo >= last:
            continue
        marks.append(
            EpisodeMark(
                number=0,
                start=max(lo, first) - first,
                stop=min(hi, last) - first,
                peak=float(episode.peak),
                top=episode.top_sensors(sensors, TOP_EPISODE_SENSORS),
                end_reason=episode.end_reason,
            )
        )
    keep = sorted(sorted(range(len(marks)), key=lambda i: -marks[i].peak)[:MAX_NAMED_EPISODES])
    for number, i in enumerate(keep, start=1):
        marks[i].number = number
    return marks


# -- matplotlib ----------------------------------------------------------------------------------


def render_png(view: DiagnosisView, output: str) -> str:
    """The view as a PNG (any matplotlib-supported extension: .svg and .pdf work too)."""
    fig = figure(view)
    import matplotlib.pyplot as plt

    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def figure(view: DiagnosisView) -> Any:
    """The matplotlib Figure of a view (tests inspect its axes and Line2D data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(f"plots need matplotlib: {PLOT_EXTRA}") from exc

    x = view.x_broken
    k = len(view.sensors)
    strips = [("share", 1.6)] + ([("mode", 0.45)] if view.modes is not None else []) + [("score", 2.2)]
    heights = [1.0] * k + [h for _, h in strips]
    text_lines = len(view.episode_lines)
    fig_height = 1.0 * sum(heights) + 1.5 + 0.13 * text_lines
    fig, axes = plt.subplots(
        len(heights), 1, figsize=(12.5, fig_height), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    axes = np.atleast_1d(axes)

    def shade(ax: Any) -> None:
        for lo, hi in view.labelled:
            ax.axvspan(view.x[lo], view.x[hi - 1], color=LABEL_COLOR, alpha=0.16, lw=0)
        for mark in view.episodes:
            ax.axvspan(view.x[mark.start], view.x[mark.stop - 1], color=EPISODE_COLOR, alpha=0.14, lw=0)

    values = view.broken(view.values)
    for j, (ax, name) in enumerate(zip(axes[:k], view.sensors, strict=True)):
        color = SHARE_COLORS[j % len(SHARE_COLORS)]
        ax.plot(x, values[:, j], lw=0.7, color=color)
        share = view.panel_shares[j]
        label = name if share is None else f"{name}\n{share:.0%} of alarm error"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25, lw=0.5)
        shade(ax)

    i = k
    ax = axes[i]
    shares = view.broken(view.shares)
    labels = [*view.sensors, "other sensors"]
    colors = [SHARE_COLORS[j % len(SHARE_COLORS)] for j in range(k)] + [OTHER_COLOR]
    # Stacked by hand: fill_between leaves a hole where the shares are NaN (warm-up, gaps), where
    # stackplot would draw a slope down to zero and back.
    upper = np.cumsum(shares, axis=1)
    lower = upper - shares
    for j, (label, color) in enumerate(zip(labels, colors, strict=True)):
        ax.fill_between(x, lower[:, j], upper[:, j], color=color, lw=0, label=label)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of\nreconstruction\nerror", rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(loc="upper left", fontsize=6, ncol=min(len(labels), 7), framealpha=0.8)
    i += 1

    if view.modes is not None:
        ax = axes[i]
        modes = view.modes
        known = sorted({int(m) for m in modes[np.isfinite(modes)] if m >= 0})
        for m in known:
            ax.fill_between(
                view.x, 0, 1, where=modes == m, step="post", color=SHARE_COLORS[m % len(SHARE_COLORS)],
                alpha=0.7, lw=0, label=f"mode {m}",
            )  # fmt: skip
        ax.set_yticks([])
        ax.set_ylabel("operating\nmode", rotation=0, ha="right", va="center", fontsize=8)
        if known:
            ax.legend(loc="upper left", fontsize=6, ncol=len(known), framealpha=0.8)
        i += 1

    ax = axes[i]
    normalised = view.broken(view.normalised)
    ax.plot(x, normalised, lw=0.7, color="black", label="normalised score")
    if view.novelty is not None:  # with modes combined by "max", it can raise an alarm by itself
        ax.plot(x, view.broken(view.novelty), lw=0.7, color="tab:purple", ls=":", label="novel-mode score")
    ax.axhline(1.0, color=EPISODE_COLOR, ls="--", lw=1, label="threshold (1.0)")
    levels = view.normalised if view.novelty is None else np.concatenate([view.normalised, view.novelty])
    finite = levels[np.isfinite(levels) & (levels > 0)]
    ax.set_yscale("log")  # faults score orders of magnitude above normal: keep 1.0 readable
    top = max(2.0, float(finite.max()) * 3.0) if finite.size else 2.0
    if finite.size:
        ax.set_ylim(max(float(finite.min()), 1e-3) * 0.08, top)  # the bottom decade holds the legend
    ax.set_ylabel("score /\nthreshold\n(log)", rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(labelsize=7)
    shade(ax)
    for mark in view.episodes:
        if mark.number:
            ax.annotate(
                str(mark.number), (view.x[mark.start], top / 1.6), fontsize=8, color=EPISODE_COLOR,
                fontweight="bold", ha="left", va="center",
            )  # fmt: skip
    handles, names = ax.get_legend_handles_labels()
    handles.append(Patch(color=EPISODE_COLOR, alpha=0.3))
    names.append("alarm episode")
    if view.labelled:
        handles.append(Patch(color=LABEL_COLOR, alpha=0.3))
        names.append("labelled anomaly")
    ax.legend(handles, names, loc="lower left", fontsize=7, ncol=4, framealpha=0.8)
    ax.set_xlabel("time (UTC)" if view.time_axis else "line in the file", fontsize=8)
    if view.time_axis:
        fig.autofmt_xdate()

    fig.suptitle(view.title + "\n" + "\n".join(view.subtitle), fontsize=8.5, x=0.01, y=0.995, ha="left")
    bottom_inches = 0.1 + 0.13 * (text_lines + 1) if text_lines else 0.05
    if view.episode_lines:
        fig.text(
            0.01, 0.005, "episodes (top sensors by share of the error over the episode):\n"
            + "\n".join(view.episode_lines), fontsize=7.5, va="bottom", ha="left", family="monospace",
        )  # fmt: skip
    fig.tight_layout(rect=(0, bottom_inches / fig_height, 1, 1))  # tight_layout makes room for the suptitle
    return fig


# -- plotly --------------------------------------------------------------------------------------


def render_html(view: DiagnosisView, output: str) -> str:
    """The view as one self-contained interactive HTML file (plotly.js inlined: it opens on a
    machine without internet, e.g. a plant laptop)."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise MissingDependencyError(
            f"-o {output}: an interactive HTML plot needs plotly: {PLOT_EXTRA}"
        ) from exc

    k = len(view.sensors)
    heights = [1.0] * k + [1.4] + ([0.4] if view.modes is not None else []) + [2.0]
    fig = make_subplots(
        rows=len(heights), cols=1, shared_xaxes=True, vertical_spacing=0.012, row_heights=heights
    )
    x = view.x_broken
    values = view.broken(view.values)
    for j, name in enumerate(view.sensors):
        share = view.panel_shares[j]
        fig.add_trace(
            go.Scatter(
                x=x, y=values[:, j], mode="lines", name=name, connectgaps=False, showlegend=False,
                line={"width": 1, "color": SHARE_COLORS[j % len(SHARE_COLORS)]},
            ),
            row=j + 1, col=1,
        )  # fmt: skip
        fig.update_yaxes(title_text=name if share is None else f"{name}<br>{share:.0%}", row=j + 1, col=1)
    row = k + 1
    shares = view.broken(view.shares)
    fig.add_trace(
        go.Heatmap(
            x=x, y=[*view.sensors, "other sensors"], z=shares.T, zmin=0, zmax=1, colorscale="Reds",
            colorbar={"title": {"text": "share"}, "len": 0.2, "y": 0.3}, name="share of error",
        ),
        row=row, col=1,
    )  # fmt: skip
    fig.update_yaxes(title_text="share of error", row=row, col=1)
    row += 1
    if view.modes is not None:
        modes = np.where(np.isfinite(view.modes) & (view.modes >= 0), view.modes, np.nan)
        fig.add_trace(
            go.Heatmap(x=view.x, y=["mode"], z=[modes], colorscale="Viridis", showscale=False, name="mode"),
            row=row, col=1,
        )  # fmt: skip
        fig.update_yaxes(title_text="mode", row=row, col=1)
        row += 1
    fig.add_trace(
        go.Scatter(
            x=x, y=view.broken(view.normalised), mode="lines", name="normalised score",
            line={"width": 1, "color": "black"}, connectgaps=False,
        ),
        row=row, col=1,
    )  # fmt: skip
    if view.novelty is not None:
        fig.add_trace(
            go.Scatter(
                x=x, y=view.broken(view.novelty), mode="lines", name="novel-mode score", connectgaps=False,
                line={"width": 1, "color": "#9467bd", "dash": "dot"},
            ),
            row=row, col=1,
        )  # fmt: skip
    fig.add_hline(y=1.0, line={"color": EPISODE_COLOR, "dash": "dash", "width": 1}, row=row, col=1)
    fig.update_yaxes(type="log", title_text="score / threshold", row=row, col=1)
    for mark in view.episodes:
        text = ", ".join(f"{n} {s:.0%}" for n, s in mark.top)
        fig.add_vrect(
            x0=view.x[mark.start], x1=view.x[mark.stop - 1], fillcolor=EPISODE_COLOR, opacity=0.14,
            line_width=0, layer="below", row="all", col=1,
        )  # fmt: skip
        if mark.number:
            fig.add_annotation(
                x=view.x[mark.start], y=1.0, yref="y domain" if row == 1 else f"y{row} domain",
                text=f"<b>{mark.number}</b>", hovertext=text, showarrow=False, font={"color": EPISODE_COLOR},
                xanchor="left", yanchor="top",
            )  # fmt: skip
    for lo, hi in view.labelled:
        fig.add_vrect(
            x0=view.x[lo], x1=view.x[hi - 1], fillcolor=LABEL_COLOR, opacity=0.14, line_width=0,
            layer="below", row="all", col=1,
        )  # fmt: skip
    subtitle = "<br>".join(view.subtitle + view.episode_lines)
    lines = len(view.subtitle) + len(view.episode_lines)
    fig.update_layout(
        title={
            "text": view.title,
            "x": 0.01,
            "xanchor": "left",
            "y": 0.995,
            "yref": "container",
            "yanchor": "top",
        },
        height=int(150 * sum(heights) + 120 + 18 * lines),
        margin={"t": 60 + 18 * lines, "l": 160},
        hovermode="x unified",
        template="plotly_white",
    )
    fig.add_annotation(
        text=subtitle, x=0, y=1.0, xref="paper", yref="paper", xanchor="left", yanchor="bottom", align="left",
        showarrow=False, font={"size": 11}, yshift=8,
    )  # fmt: skip
    fig.write_html(output, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return output


def output_for(output: str, asset: str | None, several: bool) -> str:
    """One file per asset with --asset all: `plot.png` -> `plot-pump-7.png` (the asset name made
    safe for a file name)."""
    if not several or asset is None:
        return output
    path = Path(output)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", asset).strip("._") or "asset"
    return str(path.with_name(f"{path.stem}-{safe}{path.suffix}"))


def render(view: DiagnosisView, output: str) -> str:
    """HTML for .html/.htm, else matplotlib by extension (.png, .svg, .pdf)."""
    if output.lower().endswith((".html", ".htm")):
        return render_html(view, output)
    return render_png(view, output)


def plot_scores(data: SensorData, result: RowScores, output: str, title: str | None = None) -> str:
    """The diagnosis plot of a file with one machine (the API the old one-page plot had)."""
    assets, _ = choose_assets(data, {}, None)
    return render(diagnose(data, result, asset=assets[0], title=title), output)
