"""How far bf16 convolutions (`precision="bf16"`, AVX512_BF16) move the scores from FP32.

Method: fit the default conv MemAE (window 32, channels 32/64, 200 slots; `--epochs`, seed 0)
on normal data, then score other data twice with the C++ runtime on the same bundle, FP32 and
bf16, and compare window by window: relative score error (median, 99th percentile, max), the
largest change of the normalised score (1.0 = threshold) and how many windows change side of
the threshold. Two datasets: the demo plant (memae_ts.io.demo_data, faults injected) and SKAB
(train on anomaly-free.csv, score every valve1/valve2/other file) when --skab points to it.

    python bench/bf16_parity.py [--skab /path/to/SKAB/data] [--epochs 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memae_ts import MemAE, _runtime
from memae_ts.engines.runtime import Runtime
from memae_ts.estimator import load
from memae_ts.io.demo_data import generate


def scores(bundle_dir: Path, data: list[Path], precision: str) -> np.ndarray:
    """Scores of every window of every file, FP32 or bf16 runtime on the same bundle."""
    model = load(bundle_dir, engine="runtime")
    model.engine_ = Runtime.from_bundle(model.bundle_, precision=precision)
    out = [model.score_samples(path) for path in data]
    return np.concatenate([s[np.isfinite(s)] for s in out]).astype(np.float64)


def compare(bundle_dir: Path, data: list[Path]) -> dict[str, Any]:
    threshold = load(bundle_dir, engine="numpy").threshold_
    a, b = scores(bundle_dir, data, "fp32"), scores(bundle_dir, data, "bf16")
    rel = np.abs(b - a) / a
    na, nb = a / threshold, b / threshold
    return {
        "windows": len(a),
        "median": float(np.median(rel)),
        "p99": float(np.quantile(rel, 0.99)),
        "max": float(rel.max()),
        "max_norm_abs": float(np.abs(nb - na).max()),
        "flipped": int(np.sum((na >= 1.0) != (nb >= 1.0))),
        "alarmed": int(np.sum(na >= 1.0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skab", type=Path, help="SKAB data directory (anomaly-free/, valve1/, ...)")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    if not _runtime.bf16_supported():
        print("this CPU has no AVX512_BF16: nothing to measure")
        return 1
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(days=14, period_seconds=60, seed=1, faults=False).to_csv(root / "history.csv", index=False)
        generate(days=7, period_seconds=60, seed=2, faults=True).to_csv(root / "live.csv", index=False)
        model = MemAE(epochs=args.epochs, seed=0).fit(root / "history.csv")
        model.save(root / "demo")
        rows.append(("demo plant", compare(root / "demo", [root / "live.csv"])))
        if args.skab:
            train = pd.read_csv(args.skab / "anomaly-free" / "anomaly-free.csv", sep=";")
            train.to_csv(root / "skab-train.csv", index=False)
            model = MemAE(epochs=args.epochs, seed=0).fit(root / "skab-train.csv")
            model.save(root / "skab")
            parts = []
            for f in sorted(args.skab.glob("*/*.csv")):
                if f.parent.name == "anomaly-free":
                    continue
                frame = pd.read_csv(f, sep=";").drop(columns=["anomaly", "changepoint"], errors="ignore")
                frame.to_csv(root / f"{f.parent.name}-{f.name}", index=False)
                parts.append(root / f"{f.parent.name}-{f.name}")
            rows.append((f"SKAB ({len(parts)} files)", compare(root / "skab", parts)))
    print(
        "| data | windows | median rel. score error | 99th pct | max | max change of normalised score "
        "| windows changing side of 1.0 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(
            f"| {name} | {r['windows']:,} | {r['median']:.1e} | {r['p99']:.1e} | {r['max']:.1e} "
            f"| {r['max_norm_abs']:.1e} | {r['flipped']} of {r['alarmed']} alarmed |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
