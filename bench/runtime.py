"""Throughput, CPU time, share of the FP32 peak and memory of the C++ runtime, against
onnxruntime and torch (not a test).

    .venv/bin/python bench/runtime.py                 # conv + mlp, batch 1 and 256, ~3 minutes
    .venv/bin/python bench/runtime.py --slots 2000 --json out.json

It builds a representative MemAE (8 sensors, window 64, 1000 memory slots, the trainer's
default layer shapes) with the trainer's own torch module, writes the bundle, and measures
scoring end to end (raw windows in, scores and contributions out). `conv-trained` is the same
conv network as a plant runs it: fitted by `MemAE(window=64, memory_slots=1000, epochs=15,
seed=0)` on 14 days of the demo plant (memae_ts.io.demo_data, 1-minute rows, seed 1, no
faults), cached under --work-dir, and scored on windows of other demo days (seed 2, faults
injected) instead of noise: a trained network addresses few memory slots (the table of slots
kept per latent row says how many), an untrained one many. Engines:

* runtime      memae_ts.engines.runtime.Runtime.score (the public API, with its Python-side checks)
* onnxruntime  InferenceSession.run on the exported graph (scaling, memory, score included)
* torch        TorchEngine.score, eager, torch.set_num_threads(threads)
* runtime bf16 the same Runtime with precision="bf16" (conv only, on a CPU with AVX512_BF16):
               convolution GEMMs in bf16, FP32 accumulation; in the same interleaved rounds, so
               its ratio to FP32 is from one run; its score difference to FP32 is printed beside

Method:

* **Distinct windows.** Every call scores the next windows of a pool larger than the caches
  (--pool-mib, default 512 MiB of float32 windows), cycled, so no engine scores a window that
  is still in cache from its previous call; all engines walk the same pool.
* **CPU time beside wall time.** Each round records wall time (perf_counter) and the process's
  CPU time (process_time: all its threads, so a spinning pool counts). Rounds are interleaved
  across engines (--rounds, default 9); the table shows the best round of each (the slower
  rounds on a shared machine measure the neighbours). Ratios are runtime/peer in one run.
* **Threads > 1 only where the runtime uses them:** it splits a batch into chunks of 16 windows
  and never runs more threads than chunks, so 2-thread rows appear from batch 32 on.
* **Share of the FP32 peak.** The core's peak is measured by memae_ts._runtime.fp32_peak:
  12-16 independent register-only FMA chains in the best ISA's vectors (cpp/src/kernels_impl.h,
  fma_loop), iterations calibrated to 40 ms a run, best of 7 runs by thread CPU time. The dense
  matrix FLOPs of one window are counted from the bundle's graph (conv1d: 2 x out_len x out_ch x
  in_ch x kernel; conv_transpose1d: 2 x in_ch x out_ch x the (input row, tap) pairs that land in
  the output; linear: 2 x in x out; memory similarity: 2 x latent rows x slots x dim), and the
  share is FLOPs per window x windows per CPU second / peak.
* **Per-stage times** (Model.profile: a steady_clock read between stages, one thread) show where
  the rest of the time goes at the largest batch, with each GEMM stage's own share of peak. With
  cosine addressing and T >= 1/40 (the default) the exponentials run in the similarity GEMM's
  epilogue, so "similarity" includes them (its share counts only the GEMM's FLOPs) and
  "softmax" is the candidate selection alone. The stages after it are timed per latent row, so
  each includes 16 clock reads a window (about 0.7 us where a read costs ~40 ns, as in a VM).
* Every engine's scores are compared with torch after the timed loops.

Then two fresh processes score the same batch, one with the runtime (which must not import
torch) and one with torch, and their peak resident memory (VmHWM) is compared. The machine this
was written on has 2 shared vCPUs, so read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS thread: numpy's OpenBLAS pool would otherwise spin on the second core of this
# 2-core machine and take it from whichever engine is being timed.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WINDOW, SENSORS = 64, 8
STAGES = ["scale", "encoder", "similarity", "softmax", "select", "shrink", "read", "decoder", "score"]


def build_bundle(arch: str, slots: int, out: Path, seed: int = 0) -> Path:
    """A bundle from the trainer's network (random init; memory rows made sparse-addressable)."""
    import torch

    from memae_ts.engines.bundle import make_bundle, save_bundle
    from memae_ts.training.model import MemAENet, NetworkSpec

    torch.manual_seed(seed)
    spec = NetworkSpec(arch=arch, n_sensors=8, window=64, memory_slots=slots)
    net = MemAENet(spec).eval()
    rng = np.random.default_rng(seed)
    config: dict[str, Any] = {
        "library_version": "bench",
        "created_at": "2026-01-01T00:00:00Z",
        "sensors": [f"sensor_{i}" for i in range(8)],
        "time_column": None,
        "asset_column": None,
        "window": 64,
        "stride": 1,
        "max_gap_seconds": None,
        "max_fill_rows": 3,
        "scaler": {
            "kind": "standard",
            "center": rng.normal(50.0, 10.0, 8).tolist(),
            "scale": rng.uniform(1.0, 5.0, 8).tolist(),
        },
        "threshold": {"method": "quantile", "value": 1.0},
        "network": net.export_graph(),
        "training": {"network_spec": spec.to_dict()},
    }
    return Path(save_bundle(out, make_bundle(config, net.export_tensors())).path)


TRAINED_EPOCHS = 15


def trained_bundle(work_dir: Path, epochs: int = TRAINED_EPOCHS, days: int = 14) -> Path:
    """The default conv network fitted on the demo plant (cached: fitting takes minutes).

    Bench shapes (window 64, 1000 slots) so its FLOPs equal the untrained bundle's; everything
    else is MemAE's default. The cache is keyed by epochs and days, so a different fit never
    reuses another's bundle.
    """
    from memae_ts import MemAE
    from memae_ts.io.demo_data import generate

    out = work_dir / f"conv-trained-e{epochs}-d{days}"
    if (out / "model" / "config.json").exists():
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    history = generate(days=days, period_seconds=60, seed=1, faults=False).drop(columns=["anomaly"])
    history.to_csv(out / "history.csv", index=False)
    print(f"fitting the trained conv bundle ({epochs} epochs on {days} demo days) into {out}", flush=True)
    MemAE(window=WINDOW, memory_slots=1000, epochs=epochs, seed=0).fit(out / "history.csv").save(
        out / "model"
    )
    return out / "model"


def real_window_pool(bundle_dir: Path, mib: float, seed: int = 2) -> np.ndarray:
    """(n, 64, 8) raw windows of demo plant days (faults injected) in the bundle's sensor order:
    every window ending on a row, as many days as `mib` MiB of windows takes (distinct windows)."""
    from memae_ts.io.demo_data import generate

    sensors = json.loads((bundle_dir / "config.json").read_text())["sensors"]
    n = max(1, int(mib * 2**20) // (WINDOW * SENSORS * 4))
    days = max(1, -(-(n + WINDOW) // 1440))
    rows = generate(days=days, period_seconds=60, seed=seed, faults=True)[sensors].to_numpy(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(rows, (WINDOW, SENSORS))[:, 0]
    return np.ascontiguousarray(windows[:n])


def slots_kept(runtime: Any, windows: np.ndarray) -> dict[str, float]:
    """How many memory slots survive the shrinkage per latent row (nonzero attention weights)."""
    kept = np.count_nonzero(runtime.attention(windows), axis=-1).ravel()
    return {
        "median": float(np.median(kept)),
        "mean": float(kept.mean()),
        "p90": float(np.quantile(kept, 0.9)),
        "max": float(kept.max()),
        "slots": float(runtime.attention(windows[:1]).shape[-1]),
    }


def window_pool(bundle_dir: Path, mib: float, seed: int = 1) -> np.ndarray:
    """(n, 64, 8) raw windows, `mib` MiB in all: the distinct inputs every engine cycles through."""
    config = json.loads((bundle_dir / "config.json").read_text())
    rng = np.random.default_rng(seed)
    center = np.asarray(config["scaler"]["center"], dtype=np.float32)
    scale = np.asarray(config["scaler"]["scale"], dtype=np.float32)
    n = max(1, int(mib * 2**20) // (WINDOW * SENSORS * 4))
    pool = rng.standard_normal((n, WINDOW, SENSORS), dtype=np.float32)
    pool *= scale
    pool += center
    return pool


class Cycler:
    """Hands out the next `batch` windows of the pool on every call (C-contiguous views)."""

    def __init__(self, pool: np.ndarray, batch: int, start: int = 0) -> None:
        self.pool, self.batch = pool, batch
        self.n = (len(pool) // batch) * batch
        self.at = (start * batch) % self.n

    def __call__(self) -> np.ndarray:
        x = self.pool[self.at : self.at + self.batch]
        self.at = (self.at + self.batch) % self.n
        return x


def graph_flops(config: dict[str, Any]) -> dict[str, float]:
    """Dense matrix FLOPs of one window per stage (encoder, similarity, decoder), from the graph."""
    net = config["network"]
    conv = net["kind"] == "conv"
    ch, length = (SENSORS, WINDOW) if conv else (WINDOW * SENSORS, 1)
    out: dict[str, float] = {}

    def layers(part: list[dict[str, Any]]) -> float:
        nonlocal ch, length
        total = 0.0
        for layer in part:
            op = layer["op"]
            if op == "linear":
                n_out = int(layer["out_features"]) if "out_features" in layer else None
                total += 0.0 if n_out is None else 2.0 * ch * n_out
                ch = n_out if n_out is not None else ch
            elif op in ("conv1d", "conv_transpose1d"):
                k, s, p = int(layer["kernel_size"]), int(layer["stride"]), int(layer["padding"])
                n_out = int(layer["out_channels"])
                if op == "conv1d":
                    out_len = (length + 2 * p - k) // s + 1
                    total += 2.0 * out_len * n_out * ch * k
                else:
                    out_len = (length - 1) * s - 2 * p + k + int(layer.get("output_padding", 0))
                    landed = sum(1 for i in range(length) for t in range(k) if 0 <= i * s - p + t < out_len)
                    total += 2.0 * ch * n_out * landed
                ch, length = n_out, out_len
        return total

    out["encoder"] = layers(net["encoder"])
    mem = net.get("memory")
    out["similarity"] = 2.0 * length * int(mem["slots"]) * int(mem["dim"]) if mem else 0.0
    out["decoder"] = layers(net["decoder"])
    return out


def layer_shapes(bundle_dir: Path) -> dict[str, Any]:
    """config.json with each GEMM layer's sizes filled in from the weights (the graph names only
    the tensors): out_features / out_channels and kernel_size."""
    from safetensors.numpy import load_file

    config = json.loads((bundle_dir / "config.json").read_text())
    tensors = load_file(str(bundle_dir / "model.safetensors"))
    for part in ("encoder", "decoder"):
        for layer in config["network"][part]:
            if "weight" not in layer:
                continue
            w = tensors[layer["weight"]]
            if layer["op"] == "linear":
                layer["out_features"] = int(w.shape[0])
            elif layer["op"] == "conv1d":
                layer["out_channels"], layer["kernel_size"] = int(w.shape[0]), int(w.shape[2])
            else:
                layer["out_channels"], layer["kernel_size"] = int(w.shape[1]), int(w.shape[2])
    return config


def timed_round(fn: Callable[[np.ndarray], Any], batches: Cycler, seconds: float) -> tuple[int, float, float]:
    """(windows, wall seconds, process CPU seconds) of one round of at least `seconds`."""
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        fn(batches())
        n += batches.batch
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            return n, wall, time.process_time() - cpu0


def measure(
    engines: dict[str, Callable[[np.ndarray], Any]], pool: np.ndarray, batch: int, rounds: int, seconds: float
) -> dict[str, dict[str, float]]:
    """Best round of each engine: windows per wall second and CPU microseconds per window."""
    cyclers = {name: Cycler(pool, batch, start=i * 7919) for i, name in enumerate(engines)}
    for name, fn in engines.items():  # warm-up (allocations, thread pools)
        for _ in range(3):
            fn(cyclers[name]())
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for _ in range(rounds):  # interleaved, so background load hits every engine alike
        for name, fn in engines.items():
            time.sleep(0.05)  # let the previous engine's spinning worker threads go idle
            n, wall, cpu = timed_round(fn, cyclers[name], seconds)
            samples[name].append((n / wall, 1e6 * cpu / n))
    return {
        name: {"win_s": max(r for r, _ in v), "cpu_us": min(c for _, c in v)} for name, v in samples.items()
    }


def stage_profile(model: Any, pool: np.ndarray, calls: int) -> dict[str, float]:
    """Microseconds per window in each stage: the median over `calls` calls of one chunk each.

    A call scores one chunk (16 distinct windows, under a millisecond, the unit every batch is
    cut into), so most calls run without being preempted, and a neighbour's time slice that does
    land in a call inflates one stage of that call only: the per-stage median leaves it out.
    """
    chunk = int(model.chunk)
    cyc = Cycler(pool, chunk, start=12345)
    per_call: dict[str, list[float]] = {k: [] for k in STAGES}
    for _ in range(calls):
        d = model.profile(cyc())
        for k in STAGES:
            per_call[k].append(1e6 * d[k] / chunk)
    return {k: float(np.median(v)) for k, v in per_call.items()}


# The child's own peak (memae_ts.peak_rss): ru_maxrss would inherit the RSS of this parent,
# which has torch loaded, because Linux carries maxrss across execve.
PEAK = """
from memae_ts.peak_rss import peak_rss_bytes
"""

RSS_RUNTIME = (
    PEAK
    + """
import sys, numpy as np
from memae_ts.engines.runtime import Runtime
rt = Runtime.load(sys.argv[1])
x = np.load(sys.argv[2])
for _ in range(5):
    rt.score(x)
assert "torch" not in sys.modules, "the runtime process imported torch"
print(peak_rss_bytes() // 1024)
"""
)

RSS_TORCH = (
    PEAK
    + """
import sys, numpy as np
from memae_ts.engines.bundle import load_bundle
from memae_ts.engines.engine_torch import TorchEngine
engine = TorchEngine(load_bundle(sys.argv[1]))
x = np.load(sys.argv[2])
for _ in range(5):
    engine.score(x)
print(peak_rss_bytes() // 1024)
"""
)


def peak_rss_mib(code: str, bundle_dir: Path, windows_file: Path, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle_dir), str(windows_file)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arch", nargs="+", default=["conv", "conv-trained", "mlp"], choices=["conv", "conv-trained", "mlp"]
    )
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "build" / "bench-runtime",
        help="where the trained bundle is cached (default build/bench-runtime)",
    )  # fmt: skip
    parser.add_argument("--trained-epochs", type=int, default=TRAINED_EPOCHS)
    parser.add_argument(
        "--trained-days", type=int, default=14, help="demo days the trained bundle is fitted on"
    )
    parser.add_argument("--slots", type=int, default=1000, help="memory slots (default 1000)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.15, help="length of one timed round")
    parser.add_argument("--pool-mib", type=float, default=512.0, help="distinct windows cycled (MiB)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from memae_ts import _runtime
    from memae_ts.engines.bundle import load_bundle
    from memae_ts.engines.engine_torch import TorchEngine
    from memae_ts.engines.export_onnx import build_onnx_model
    from memae_ts.engines.runtime import Runtime

    peak = _runtime.fp32_peak(0.3, 7)
    peak_gflops = float(peak["gflops_cpu"])
    print(
        f"FP32 peak ({peak['isa']} FMA chains, best of {peak['runs']}): "
        f"{peak_gflops:.1f} GFLOP/s by CPU time, {float(peak['gflops_wall']):.1f} by wall time",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    threads_list = sorted(set(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            if arch == "conv-trained":
                bundle_dir = trained_bundle(args.work_dir, args.trained_epochs, args.trained_days)
            else:
                bundle_dir = build_bundle(arch, args.slots, Path(tmp) / arch)
            flops = graph_flops(layer_shapes(bundle_dir))
            flops_window = sum(flops.values())
            bundle = load_bundle(bundle_dir)
            onnx_bytes = build_onnx_model(bundle).SerializeToString()
            torch_engine = TorchEngine(bundle)
            if arch == "conv-trained":
                pool = real_window_pool(bundle_dir, args.pool_mib)
            else:
                pool = window_pool(bundle_dir, args.pool_mib)
            kept.append(
                {"arch": arch, **slots_kept(Runtime.load(bundle_dir), np.ascontiguousarray(pool[:256]))}
            )
            print(
                f"{arch}: {flops_window / 1e6:.2f} MFLOP per window; pool of {len(pool):,} windows",
                flush=True,
            )
            for threads in threads_list:
                torch.set_num_threads(threads)
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
                runtime = Runtime.load(bundle_dir, threads=threads)
                with_bf16 = arch.startswith("conv") and _runtime.bf16_supported()
                runtime_bf16 = Runtime.load(bundle_dir, threads, "bf16") if with_bf16 else None
                chunk = int(runtime._model.chunk)
                for batch in args.batches:
                    if threads > 1 and batch // chunk < threads:
                        continue  # the runtime would run one thread: not a 2-thread comparison
                    engines: dict[str, Callable[[np.ndarray], Any]] = {
                        "runtime": runtime.score,
                        "onnxruntime": lambda x, session=session: session.run(
                            ["scores", "contributions"], {"windows": x}
                        ),
                        "torch": torch_engine.score,
                    }
                    if runtime_bf16 is not None:
                        engines["runtime_bf16"] = runtime_bf16.score
                    rates = measure(engines, pool, batch, args.rounds, args.seconds)
                    x = np.ascontiguousarray(pool[:batch])
                    ref = np.asarray(torch_engine.score(x)[0], dtype=np.float64)
                    worst = max(
                        float(np.max(np.abs(np.asarray(fn(x)[0], dtype=np.float64) - ref) / np.abs(ref)))
                        for name, fn in engines.items()
                        if name not in ("torch", "runtime_bf16")
                    )
                    bf16_diff = None
                    if runtime_bf16 is not None:
                        fp32_scores = np.asarray(runtime.score(x)[0], dtype=np.float64)
                        bf16_scores = np.asarray(runtime_bf16.score(x)[0], dtype=np.float64)
                        bf16_diff = float(np.max(np.abs(bf16_scores - fp32_scores) / fp32_scores))
                    rt = rates["runtime"]
                    row = {
                        "arch": arch,
                        "threads": threads,
                        "batch": batch,
                        **{f"{k}_win_s": v["win_s"] for k, v in rates.items()},
                        **{f"{k}_cpu_us": v["cpu_us"] for k, v in rates.items()},
                        "ort_ratio_wall": rt["win_s"] / rates["onnxruntime"]["win_s"],
                        "ort_ratio_cpu": rates["onnxruntime"]["cpu_us"] / rt["cpu_us"],
                        "torch_ratio_cpu": rates["torch"]["cpu_us"] / rt["cpu_us"],
                        "peak_share": flops_window / (rt["cpu_us"] * 1e-6) / (peak_gflops * 1e9),
                        "max_rel_diff": worst,
                    }
                    if bf16_diff is not None:
                        row["bf16_ratio_cpu"] = rt["cpu_us"] / rates["runtime_bf16"]["cpu_us"]
                        row["bf16_ratio_wall"] = rates["runtime_bf16"]["win_s"] / rt["win_s"]
                        row["bf16_max_rel_diff"] = bf16_diff
                    results.append(row)
                    print(
                        f"{arch:4s} threads={threads} batch={batch:3d}  "
                        + "  ".join(
                            f"{k} {v['win_s']:9.0f}/s {v['cpu_us']:7.1f} us CPU" for k, v in rates.items()
                        )
                        + f"  peak {row['peak_share']:.0%}  (max rel diff vs torch {worst:.1e})",
                        flush=True,
                    )
            big = max(args.batches)
            runtime = Runtime.load(bundle_dir, threads=1)
            per = stage_profile(runtime._model, pool, calls=600)
            stage_row: dict[str, Any] = {"arch": arch, "flops": flops, **per}
            stages.append(stage_row)
            x = np.ascontiguousarray(pool[:big])
            windows_file = Path(tmp) / f"{arch}.npy"
            np.save(windows_file, x)
            memory.append(
                {
                    "arch": arch,
                    "runtime_mib": peak_rss_mib(RSS_RUNTIME, bundle_dir, windows_file, 1),
                    "torch_mib": peak_rss_mib(RSS_TORCH, bundle_dir, windows_file, 1),
                }
            )
            del pool

    print()
    print(
        f"FP32 peak of this core: {peak_gflops:.1f} GFLOP/s ({peak['isa']}, CPU time; "
        f"wall {float(peak['gflops_wall']):.1f})"
    )
    print()
    header = [
        "model",
        "threads",
        "batch",
        "runtime win/s",
        "ORT win/s",
        "torch win/s",
        "runtime CPU µs/win",
        "ORT CPU µs/win",
        "torch CPU µs/win",
        "runtime/ORT wall",
        "runtime/ORT CPU",
        "runtime/torch CPU",
        "runtime share of FP32 peak",
    ]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for r in results:
        cells = [
            r["arch"],
            r["threads"],
            r["batch"],
            f"{r['runtime_win_s']:,.0f}",
            f"{r['onnxruntime_win_s']:,.0f}",
            f"{r['torch_win_s']:,.0f}",
            f"{r['runtime_cpu_us']:.1f}",
            f"{r['onnxruntime_cpu_us']:.1f}",
            f"{r['torch_cpu_us']:.1f}",
            f"{r['ort_ratio_wall']:.2f}x",
            f"{r['ort_ratio_cpu']:.2f}x",
            f"{r['torch_ratio_cpu']:.2f}x",
            f"{r['peak_share']:.0%}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    bf16_rows = [r for r in results if "bf16_ratio_cpu" in r]
    if bf16_rows:
        print()
        print(
            "bf16 convolutions (precision='bf16'; memory addressing and score FP32), same rounds as above; "
            "speed-up = FP32 / bf16 CPU time per window (and bf16 / FP32 windows per wall second):"
        )
        print()
        print(
            "| model | threads | batch | FP32 CPU µs/win | bf16 CPU µs/win | bf16 speed-up CPU | "
            "bf16 speed-up wall | max rel. score diff vs FP32 |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in bf16_rows:
            print(
                f"| {r['arch']} | {r['threads']} | {r['batch']} | {r['runtime_cpu_us']:.1f} | "
                f"{r['runtime_bf16_cpu_us']:.1f} | {r['bf16_ratio_cpu']:.2f}x | "
                f"{r['bf16_ratio_wall']:.2f}x | {r['bf16_max_rel_diff']:.1e} |"
            )
    print()
    print(
        "Per-stage time of the runtime, one thread, µs per window (median over 600 one-chunk calls of "
        "distinct windows; GEMM stages: their own share of the peak):"
    )
    print()
    print("| model | " + " | ".join(STAGES) + " | total |")
    print("| --- |" + " ---: |" * (len(STAGES) + 1))
    for st in stages:
        cells = []
        for k in STAGES:
            us = st[k]
            f = st["flops"].get(k)
            cells.append(
                f"{us:.1f} ({f / (us * 1e-6) / (peak_gflops * 1e9):.0%})" if f and us > 0 else f"{us:.1f}"
            )
        total = sum(st[k] for k in STAGES)
        print(f"| {st['arch']} | " + " | ".join(cells) + f" | {total:.1f} |")
    print()
    print("Memory slots kept per latent row after the shrinkage (256 windows of the pool):")
    print()
    print("| model | slots | median | mean | 90th percentile | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in kept:
        print(
            f"| {k['arch']} | {k['slots']:.0f} | {k['median']:.0f} | {k['mean']:.1f} | {k['p90']:.0f} "
            f"| {k['max']:.0f} |"
        )
    print()
    print("| model | runtime process peak RSS | torch process peak RSS | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for m in memory:
        ratio = m["runtime_mib"] / m["torch_mib"]
        print(f"| {m['arch']} | {m['runtime_mib']:.0f} MiB | {m['torch_mib']:.0f} MiB | {ratio:.2f} |")
    print()
    goals = []
    for r in results:
        if r["threads"] == 1 and r["batch"] == 1:
            name = f"{r['arch']} threads=1 batch=1: runtime/ORT in CPU time >= 3 (distinct windows)"
            goals.append((name, r["ort_ratio_cpu"] >= 3.0))
        if r["arch"].startswith("conv") and r["threads"] == 1 and r["batch"] == max(args.batches):
            name = f"{r['arch']} threads=1 batch={r['batch']}: >= 75 % of the measured FP32 peak"
            goals.append((name, r["peak_share"] >= 0.75))
    for m in memory:
        goals.append((f"{m['arch']}: runtime RSS < 1/3 of torch RSS", m["runtime_mib"] * 3 < m["torch_mib"]))
    for name, ok in goals:
        print(f"{'met ' if ok else 'MISS'}  {name}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"peak": peak, "throughput": results, "stages": stages, "memory": memory, "slots_kept": kept},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
