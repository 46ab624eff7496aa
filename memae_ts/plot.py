"""A one-page picture of a scored file: sensors, score against threshold, flags, labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from memae_ts.data import SensorData
from memae_ts.errors import MissingDependencyError
from memae_ts.scoring import RowScores

MAX_SENSOR_PANELS = 8


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where mask is True."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2], strict=True))


def plot_scores(data: SensorData, result: RowScores, output: str, title: str | None = None) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("plots need matplotlib: pip install 'memae-ts[train]'") from exc

    sensors = data.sensors[:MAX_SENSOR_PANELS]
    x: Any = data.timestamps.tz_localize(None) if data.timestamps is not None else np.arange(len(data))
    n_panels = len(sensors) + 1
    fig, axes = plt.subplots(
        n_panels,
        1,
        figsize=(12, 1.3 * n_panels + 1.5),
        sharex=True,
        gridspec_kw={"height_ratios": [1] * len(sensors) + [2]},
    )
    flagged = _spans(result.is_anomaly)
    labelled = _spans(data.labels == 1) if data.labels is not None else []

    def shade(ax: Any) -> None:
        for start, stop in labelled:
            ax.axvspan(x[start], x[min(stop, len(x) - 1)], color="tab:orange", alpha=0.18, lw=0)
        for start, stop in flagged:
            ax.axvspan(x[start], x[min(stop, len(x) - 1)], color="tab:red", alpha=0.18, lw=0)

    for ax, name in zip(axes[:-1], sensors, strict=True):
        j = data.sensors.index(name)
        ax.plot(x, data.values[:, j], lw=0.6, color="tab:blue")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        shade(ax)
    ax = axes[-1]
    ax.plot(x, result.normalised, lw=0.7, color="black", label="normalised score")
    ax.axhline(1.0, color="tab:red", ls="--", lw=1, label="threshold (1.0)")
    finite = result.normalised[np.isfinite(result.normalised)]
    ax.set_yscale("log")  # faults score orders of magnitude above normal: keep 1.0 readable
    if finite.size:
        ax.set_ylim(max(float(finite.min()), 1e-3) * 0.8, max(2.0, float(finite.max()) * 1.5))
    ax.set_ylabel("score / threshold (log)", fontsize=8)
    shade(ax)
    handles, labels = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles.append(Patch(color="tab:red", alpha=0.3))
    labels.append("flagged")
    if labelled:
        handles.append(Patch(color="tab:orange", alpha=0.3))
        labels.append("labelled anomaly")
    ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=4)
    fig.suptitle(title or data.source, fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
