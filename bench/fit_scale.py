"""How `fit` scales with the length of the history: load time, peak memory, training speed.

Method. A synthetic plant series (20 sensors at 1 s: slow sine modes, noise, a few missing
cells) is written once per size as Parquet (float32 columns; and as CSV up to 1 M rows). Each
measurement runs in a fresh child process and reads its own peak RSS (VmHWM, through this
tree's memae_ts/peak_rss.py even with --tree: `ru_maxrss` would carry this parent's peak):

- load: seconds to read the file into a SensorData (blank when the file is streamed: a Parquet
  input larger than fit's --memory-limit is read in passes inside fit);
- fit: `MemAE(epochs=1, steps_per_epoch=S)` (S = 200 batches of 64 windows, sampled over all
  windows) on the loaded data; "s / 10k windows" is the training epoch's wall time per 10,000
  windows, CPU seconds beside it;
- peak RSS and its ratio to the float32 size of the sensor matrix (rows × sensors × 4 bytes).

`--tree DIR` runs the same child against another checkout (e.g. the code before a change) for a
before/after table; that code may lack `steps_per_epoch`, in which case one full epoch is timed.
Run it several times: absolute times drift on a shared machine, the ratios less so.

    python bench/fit_scale.py --sizes 100000 1000000 --format csv parquet
    python bench/fit_scale.py --sizes 20000000 --format parquet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_SENSORS = 20
PEAK_RSS_MODULE = Path(__file__).resolve().parents[1] / "memae_ts" / "peak_rss.py"
STEPS = 200
BATCH = 64

CHILD = r"""
import json, os, runpy, sys, time, warnings
tree = os.environ.get("FIT_SCALE_TREE")
if tree:
    skip = ("editable", "scikit")
    sys.meta_path = [f for f in sys.meta_path if not any(w in repr(f).lower() for w in skip)]
    sys.path.insert(0, tree)
warnings.simplefilter("ignore")
import inspect
from memae_ts.estimator import MemAE
from memae_ts.io.data import load_csv
path, steps, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
peak_rss_bytes = runpy.run_path(sys.argv[4])["peak_rss_bytes"]
params = dict(epochs=1, batch_size=64, seed=0)
accepted = inspect.signature(MemAE.__init__).parameters
sampled = "steps_per_epoch" in accepted
if sampled:
    params["steps_per_epoch"] = steps
streamed = False
if "memory_limit" in accepted:
    from memae_ts.training.streaming import streaming_plan
    params["memory_limit"] = limit
    streamed = streaming_plan(path, limit) is not None
t0, c0 = time.perf_counter(), time.process_time()
data = path if streamed else load_csv(path)  # a streamed fit reads the file in its own passes
load_s = float("nan") if streamed else time.perf_counter() - t0
load_rss = peak_rss_bytes()
t1, c1 = time.perf_counter(), time.process_time()
model = MemAE(**params).fit(data)
fit_s, fit_cpu = time.perf_counter() - t1, time.process_time() - c1
training = model.bundle_.config["training"]
seconds = getattr(getattr(model, "history_", None), "seconds_per_epoch", 0.0) or fit_s
windows = steps * 64 if sampled else training["n_train_windows"]
print(json.dumps({
    "rows": len(data), "load_s": load_s, "fit_s": fit_s, "fit_cpu_s": fit_cpu,
    "epoch_s": seconds, "epoch_windows": windows, "sampled": sampled, "streamed": streamed,
    "load_rss": load_rss, "peak_rss": peak_rss_bytes(),
}))
"""


def make_data(rows: int, root: Path, formats: list[str], seed: int = 0) -> dict[str, Path]:
    """The synthetic history, generated in chunks so the generator itself stays small."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {fmt: root / f"plant-{rows}.{fmt}" for fmt in formats}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, N_SENSORS)
    periods = rng.uniform(600, 7200, N_SENSORS)
    levels = rng.uniform(10, 1000, N_SENSORS)
    names = [f"sensor_{j:02d}" for j in range(N_SENSORS)]
    writer = None
    csv = open(paths["csv"], "w") if "csv" in paths else None
    start = np.datetime64("2026-01-01T00:00:00", "s")
    try:
        for offset in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - offset)
            t = np.arange(offset, offset + n, dtype=np.float64)
            values = levels * (1 + 0.05 * np.sin(2 * np.pi * t[:, None] / periods + phases))
            values += rng.normal(0, 0.005, (n, N_SENSORS)) * levels
            values = values.astype(np.float32)
            values[rng.random((n, N_SENSORS)) < 1e-4] = np.nan
            times = start + t.astype("timedelta64[s]")
            if "parquet" in paths:
                table = pa.table(
                    {"timestamp": pa.array(times.astype("datetime64[ns]")).cast(pa.timestamp("ns", "UTC"))}
                    | {name: values[:, j] for j, name in enumerate(names)}
                )
                if writer is None:
                    writer = pq.ParquetWriter(paths["parquet"], table.schema)
                writer.write_table(table, row_group_size=500_000)
            if csv is not None:
                if offset == 0:
                    csv.write("timestamp," + ",".join(names) + "\n")
                stamps = np.datetime_as_string(times, unit="s")
                body = np.char.add(stamps.astype(str), "Z")
                cells = np.where(np.isnan(values), "", np.char.mod("%.6g", values))
                lines = [",".join(row) for row in np.column_stack([body, cells])]
                csv.write("\n".join(lines) + "\n")
    finally:
        if writer is not None:
            writer.close()
        if csv is not None:
            csv.close()
    return paths


def measure(path: Path, tree: str | None, memory_limit: str) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "MEMAE_TS_THREADS": os.environ.get("MEMAE_TS_THREADS", "1"),
    }
    if tree:
        env["FIT_SCALE_TREE"] = tree
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(STEPS), memory_limit, str(PEAK_RSS_MODULE)],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - started
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--format", nargs="+", default=["parquet"], choices=["parquet", "csv"])
    parser.add_argument("--data-dir", default="bench-data/fit_scale", help="where the synthetic files go")
    parser.add_argument("--tree", help="another checkout to measure (before/after)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement (median shown)")
    parser.add_argument(
        "--memory-limit",
        default="",
        help="fit's --memory-limit (default: fit's own, half of this machine's memory); above it a "
        "Parquet input is streamed",
    )
    args = parser.parse_args()
    root = Path(args.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"{'rows':>10} {'format':>7} {'load s':>7} {'s/10k win':>9} {'cpu s/10k':>9} "
        f"{'peak RSS':>9} {'data f32':>9} {'RSS/data':>8}  code"
    )
    for rows in args.sizes:
        formats = [f for f in args.format if f == "parquet" or rows <= 1_000_000]
        paths = make_data(rows, root, formats)
        for fmt in formats:
            runs = [measure(paths[fmt], args.tree, args.memory_limit) for _ in range(args.runs)]
            ok = [r for r in runs if "error" not in r]
            data_bytes = rows * N_SENSORS * 4
            if not ok:
                print(f"{rows:>10} {fmt:>7}  failed: {runs[0]['error']}")
                continue
            med = {
                k: float(np.median([r[k] for r in ok])) for k in ok[0] if isinstance(ok[0][k], (int, float))
            }
            per10k = med["epoch_s"] / med["epoch_windows"] * 10_000
            cpu10k = med["fit_cpu_s"] / max(med["fit_s"], 1e-9) * per10k
            print(
                f"{rows:>10} {fmt:>7} {med['load_s']:>7.1f} {per10k:>9.2f} {cpu10k:>9.2f} "
                f"{med['peak_rss'] / 2**30:>8.2f}G {data_bytes / 2**30:>8.2f}G "
                f"{med['peak_rss'] / data_bytes:>8.1f}  {args.tree or 'this tree'}"
                f"{'' if ok[0]['sampled'] else ' (one full epoch)'}"
                f"{' (streamed)' if ok[0].get('streamed') else ''}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
