"""The daemon's CPU per reading at moderate rates: many assets, a few readings each per poll.

Why: at live rates of 1,000-20,000 readings/s a poll holds only a few readings per asset, and
the processor pays a fixed Python cost per asset and poll (buffers, hop, alarm rule, drift and
score metrics). A plant with 1,000 assets at 1 Hz sends about one reading per asset per poll.

Method (in-process, no broker: only the processor's own work is measured):

* A ``StreamProcessor`` with an in-memory source and sink (the sink keeps the encoded records
  as bytes; nothing is decoded) and a numpy engine (mean of the window) on its worker thread.
  Model: window 32, 8 sensors, ``max_gap_seconds`` 600, ``max_fill_rows`` 3, period 1 s, a
  training range (drift counters: some values fall outside it), the default alarm rule.
* Polls of ``--assets`` assets (default 1,000), each with ``k`` readings per poll (``--per-asset``,
  default 1,2,4,8), assets interleaved at random, each asset's readings in order, 1 s apart.
  Messy rows: 2 % of values missing (forward-filled, or the series restarts after 3 rows), a
  900 s gap now and then (a new series), 0.5 % unreadable messages (dead letters), assets on
  4 partitions. Buffers are filled first (one warm-up poll of 40 readings per asset, not timed).
* CPU per reading = ``time.thread_time()`` of the main thread over ``--polls`` timed polls
  (the engine thread is not counted; its work is the same in both), divided by the readings;
  wall time beside it. ``baseline`` is the processor, buffers, alarm rule, drift and metrics
  of ``--baseline`` (a git revision, loaded from ``git show`` into their own modules),
  ``current`` the working tree;
  the two run interleaved, ``--runs`` rounds, fresh processors each time, and must produce
  byte-identical score records, dead letters and commits (checked every round: exit 1 if not).
* ``--profile``: a cProfile of the current processor's timed polls (one setting), top functions.

Run:  .venv/bin/python bench/per_asset.py                         (about a minute)
      .venv/bin/python bench/per_asset.py --per-asset 1 --hops 1 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import logging
import pstats
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from memae_ts.connectors import processor as current_processor
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from processor_fakes import MeanEngine, Msg, ScriptedPolls  # noqa: E402

SENSORS = [f"s{i}" for i in range(8)]
WINDOW = 32
PARTITIONS = 4


@dataclass
class Source(ScriptedPolls):
    batches: list[list[Msg]] = field(default_factory=list)
    commits: list[dict[int, int]] = field(default_factory=list)
    assigned: set[int] = field(default_factory=lambda: set(range(PARTITIONS)))
    transactional: bool = False

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.zeros(len(partitions), dtype=bool)

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        self.commits.append({**next_offsets, **{-1 - p: o for p, o in rebuild_from.items()}})
        return True


@dataclass
class Sink:
    published: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[tuple[Any, ...]] = field(default_factory=list)

    def publish_many(self, keys: list[bytes], values: list[bytes]) -> None:
        self.published.extend(zip(keys, values, strict=True))

    def publish_episodes(self, keys: list[bytes], values: list[bytes]) -> None:
        self.published.extend(zip(keys, values, strict=True))

    def dead_letter(self, key: Any, value: Any, reason: str, detail: str, source: Any) -> None:
        self.dead.append((key, reason, detail, source))

    def flush(self, timeout_s: float = 60.0) -> int:
        return 0

    def close(self) -> None:
        pass


# What the profile sums per part of the per-asset work: (file ending, function) pairs.
PROFILE_PARTS = [
    ("whole step (StreamProcessor.step)", [("processor.py", "step")]),
    ("parse the poll (ReadingParser.parse_batch)", [("messages.py", "parse_batch")]),
    ("group by asset (_group)", [("processor.py", "_group")]),
    ("window a slice of assets (_prepare_lane, all below)", [("processor.py", "_prepare_lane")]),
    ("  buffers (WindowBuffers.extend)", [("buffers.py", "extend")]),
    ("    of which forward-fill / dropout rows (_filled)", [("buffers.py", "_filled")]),
    ("  drift metrics (_Lane.observe, observe_assets)", [("processor.py", "observe"),
                                                        ("processor.py", "observe_assets")]),
    ("  scoring hop (_hop_previous, hop_keep, carry_starts)",
     [("processor.py", "_hop_previous"), ("hop.py", "hop_keep"), ("hop.py", "carry_starts")]),
    ("publish a slice (_publish, all below)", [("processor.py", "_publish")]),
    ("  alarm rule and its metrics (_alarms)", [("processor.py", "_alarms")]),
    ("  score records (encode_scores)", [("messages.py", "encode_scores")]),
    ("  score gauges and p95 (observe_score, observe_scores)", [("metrics.py", "observe_score"),
                                                               ("processor.py", "observe_scores")]),
    ("checkpoint (flush, commit, rebuild offsets)", [("processor.py", "checkpoint")]),
]  # fmt: skip


def make_polls(n_assets: int, per_asset: int, n_polls: int, seed: int) -> list[list[Msg]]:
    """One warm-up poll (40 readings per asset) and ``n_polls`` polls of ``per_asset`` each."""
    rng = random.Random(seed)
    assets = [f"machine-{i:04d}" for i in range(n_assets)]
    clock = {a: 1_700_000_000.0 + rng.random() for a in assets}
    level = {a: rng.gauss(0, 1) for a in assets}
    offsets = [0] * PARTITIONS
    polls = []
    for k, count in enumerate([40] + [per_asset] * n_polls):
        order = [a for a in assets for _ in range(count)]
        rng.shuffle(order)
        poll = []
        for a in order:
            clock[a] += 900.0 if rng.random() < 0.001 else 1.0
            values = [None if rng.random() < 0.02 else round(rng.gauss(level[a], 0.3), 4) for _ in SENSORS]
            body = json.dumps([clock[a], *values]).encode() if rng.random() > 0.005 or k == 0 else b"{"
            p = int(a[-4:]) % PARTITIONS
            poll.append(Msg(p, offsets[p], a.encode(), body, timestamp=int(clock[a] * 1000)))
            offsets[p] += 1
        polls.append(poll)
    return polls


# The modules whose per-asset work this bench compares (their repository paths), in import order.
COMPARED = {
    "memae_ts.connectors.drift": "connectors/drift.py",
    "memae_ts.detection.alarms": "memae_ts/detection/alarms.py",
    "memae_ts.connectors.buffers": "connectors/buffers.py",
    "memae_ts.connectors.metrics": "connectors/metrics.py",
    "memae_ts.connectors.processor": "connectors/processor.py",
}


def load_baseline(rev: str) -> ModuleType:
    """The processor of git revision ``rev`` with that revision's buffers, alarm rule, drift and
    metrics modules (each loaded from ``git show`` into a module of its own; the rest is shared)."""
    loaded: dict[str, ModuleType] = {}
    for name, path in COMPARED.items():
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True)
        source = text.stdout.decode()
        for other in loaded:  # import the baseline's versions of the modules compared
            short = other.rsplit(".", 1)[1]
            source = source.replace(f"from {other} import", f"from _baseline_{short} import")
        spec = importlib.util.spec_from_loader(f"_baseline_{name.rsplit('.', 1)[1]}", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        loaded[name] = module
    return loaded["memae_ts.connectors.processor"]


def run(module: ModuleType, polls: list[list[Msg]], hop: int, profile: Any = None) -> dict:
    source, sink = Source(), Sink()
    model = module.ServedModel(
        MeanEngine(), list(SENSORS), WINDOW, threshold=1.2, version="v1",
        max_gap_seconds=600.0, max_fill_rows=3, period_seconds=1.0,
        training_range=module.TrainingRange(np.full(len(SENSORS), -2.5), np.full(len(SENSORS), 2.5)),
    )  # fmt: skip
    config = module.ProcessingConfig(hop=hop)
    metrics = module.EdgeMetrics(CollectorRegistry())
    proc = module.StreamProcessor(lambda *callbacks: source, sink, model, metrics, config)
    source.batches = [list(p) for p in polls]
    proc.step()  # warm-up: the buffers fill
    readings = sum(map(len, polls[1:]))
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    while source.batches:
        proc.step()
    if profile is not None:
        profile.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    proc.close()
    return {
        "cpu_us": cpu / readings * 1e6,
        "wall_us": wall / readings * 1e6,
        "out": (sink.published, sink.dead, source.commits),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=int, default=1000)
    ap.add_argument("--per-asset", default="1,2,4,8", help="readings per asset and poll (comma list)")
    ap.add_argument("--hops", default="1,10")
    ap.add_argument("--polls", type=int, default=8, help="timed polls per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare against ('' = none)")
    ap.add_argument("--profile", action="store_true", help="cProfile the current processor (first setting)")
    args = ap.parse_args()
    logging.getLogger("memae_ts").setLevel(logging.ERROR)  # "alarm states are not kept": no Kafka sink
    baseline = load_baseline(args.baseline) if args.baseline else None
    impls = ([("baseline", baseline)] if baseline else []) + [("current", current_processor)]
    print(f"{args.assets} assets, window {WINDOW}, {len(SENSORS)} sensors, {args.polls} timed polls per run, "
          f"{args.runs} rounds (baseline = {args.baseline or 'none'}); main-thread CPU us per reading, "
          "median [range], wall beside it")  # fmt: skip
    header = f"{'per asset':>9} {'hop':>4} {'readings/poll':>13} "
    header += " ".join(f"{name + ' CPU':>22} {'wall':>6}" for name, _ in impls)
    print(header + ("   ratio" if baseline else ""))
    failed = False
    for k in [int(x) for x in args.per_asset.split(",")]:
        for hop in [int(x) for x in args.hops.split(",")]:
            cpu: dict[str, list[float]] = {name: [] for name, _ in impls}
            wall: dict[str, list[float]] = {name: [] for name, _ in impls}
            for r in range(args.runs):
                polls = make_polls(args.assets, k, args.polls, seed=r)
                outs = []
                for name, module in impls:
                    result = run(module, polls, hop)
                    cpu[name].append(result["cpu_us"])
                    wall[name].append(result["wall_us"])
                    outs.append(result["out"])
                if baseline and outs[0] != outs[1]:
                    print(f"  OUTPUT DIFFERS from the baseline (per asset {k}, hop {hop}, round {r})")
                    failed = True
            cells = []
            for name, _ in impls:
                c = cpu[name]
                spread = f"{statistics.median(c):8.1f} [{min(c):5.1f}-{max(c):5.1f}]"
                cells.append(f"{spread} {statistics.median(wall[name]):6.1f}")
            line = f"{k:>9} {hop:>4} {args.assets * k:>13} " + " ".join(f"{c:>29}" for c in cells)
            if baseline:
                ratios = [b / c for b, c in zip(cpu["baseline"], cpu["current"], strict=True)]
                line += f"   {statistics.median(ratios):.2f}x"
            print(line, flush=True)
    if args.profile:
        k = int(args.per_asset.split(",")[0])
        hop = int(args.hops.split(",")[0])
        polls = make_polls(args.assets, k, args.polls, seed=99)
        asset_polls = args.assets * args.polls
        columns: dict[str, pstats.Stats] = {}
        out = io.StringIO()
        for name, module in impls:
            profile = cProfile.Profile()
            run(module, polls, hop, profile)
            columns[name] = pstats.Stats(profile, stream=out)
        print(f"\ncProfile, {k} per asset, hop {hop}: cumulative us per asset and poll (the profiler's "
              "own cost included, so only the shares are meaningful)")  # fmt: skip
        print(f"  {'':<58}" + "".join(f"{name:>10}" for name in columns))
        for label, parts in PROFILE_PARTS:
            cells = []
            for stats in columns.values():
                found = [
                    cumulative
                    for (path, _, func), (_, _, _, cumulative, _) in stats.stats.items()  # type: ignore[attr-defined]
                    if any(path.endswith(f) and func == name for f, name in parts)
                ]
                # Two functions named extend in buffers.py, one calling the other: the outer one.
                seconds = max(found, default=0.0) if "WindowBuffers" in label else sum(found)
                cells.append(f"{seconds / asset_polls * 1e6:10.1f}")
            print(f"  {label:<58}" + "".join(cells))
        columns["current"].sort_stats("tottime").print_stats(15)
        print("current, top 15 by own time:")
        print("\n".join(out.getvalue().splitlines()[6:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
