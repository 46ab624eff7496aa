"""Plots of normalised scores against labels for a few SKAB files (docs/img/skab_*.png).

Reads the per-file scores that `bench/skab.py --scores-out` saved, so the plots show exactly
the run in docs/benchmarks.md. Small PNGs (about 30 kB): they live in git.

Run:  .venv/bin/python bench/plot_skab.py /tmp/skab_scores.npz --files valve1/1.csv other/9.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.skab import DEFAULT_DATA, TRAIN_ROWS, read  # noqa: E402


def plot(scores: np.ndarray, labels: np.ndarray, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.arange(scores.size)
    fig, ax = plt.subplots(figsize=(8, 2.4), dpi=80)
    top = float(np.nanmax(scores)) if np.isfinite(scores).any() else 2.0
    ax.fill_between(rows, 0, top * 1.05, where=labels > 0, color="tab:red", alpha=0.15, lw=0, label="anomaly")
    ax.plot(rows, scores, color="tab:blue", lw=0.8, label="score / threshold")
    ax.axhline(1.0, color="black", lw=0.8, ls="--", label="alarm level")
    ax.axvline(TRAIN_ROWS, color="grey", lw=0.8, ls=":", label="train | test")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlim(0, scores.size)
    ax.set_ylim(0, max(top, 1.0) * 1.5)
    ax.set_xlabel("row (1 s per row)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scores", help=".npz written by bench/skab.py --scores-out")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--variant", default="memae")
    parser.add_argument("--files", nargs="+", default=["valve1/1.csv", "valve2/2.csv", "other/9.csv"])
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "img"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    saved = np.load(args.scores)
    for name in args.files:
        labels = read(args.data, name)["anomaly"].to_numpy()
        path = os.path.join(args.out, f"skab_{name.replace('/', '_').replace('.csv', '')}.png")
        plot(saved[f"{args.variant}/{name}"], labels, f"SKAB {name}: MemAE ({args.variant}) score", path)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
