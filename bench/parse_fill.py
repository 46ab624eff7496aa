"""CPU per reading of the daemon's two per-message stages on messy input: parsing a poll of
readings (``ReadingParser.parse_batch``) and windowing it with the forward-fill rules
(``WindowBuffers.extend``), the working tree against a git revision.

Why: a poll from a plant is rarely clean. A dead letter now and then, or a sensor that misses a
value, used to send the whole poll down a message-by-message or row-by-row path; this measures
what such polls cost, apart from Kafka and the engine (bench/stream.py has the daemon whole).

Method (in-process, one thread):

* Parsing: polls of 2,000 messages (10 assets, 8 sensors, ISO times), in the object form
  ``{"ts", "values"}`` and the compact form ``[ts, v0, ...]``, with 0 % and 0.5 % of them
  unreadable (dead letters). CPU per message = ``time.process_time()`` over 10 polls.
* Windowing: 40 polls of 500 rows of one asset (window 60, 8 sensors, ``max_fill_rows`` 3),
  with 0 %, 0.1 % and 2 % of the values missing. CPU per row, as above.
* ``baseline`` is ``connectors/messages.py`` and ``connectors/buffers.py`` of ``--baseline``
  (loaded from ``git show`` into modules of their own), ``current`` the working tree; the two
  run interleaved, ``--runs`` rounds on the same inputs, and must give the same readings and
  windows (checked every round: exit 1 if not). Median and range over the rounds.

Run:  .venv/bin/python bench/parse_fill.py --baseline 4d24844      (about a minute)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from memae_ts.connectors import buffers as current_buffers
from memae_ts.connectors import messages as current_messages

REPO = Path(__file__).resolve().parent.parent
SENSORS = [f"s{i}" for i in range(8)]


def module_at(rev: str, path: str) -> ModuleType:
    """The module at ``path`` as it was in git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True)
    spec = importlib.util.spec_from_loader(f"_baseline_{Path(path).stem}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source.stdout.decode(), f"{rev}:{path}", "exec"), module.__dict__)
    return module


def polls_of_messages(rng: random.Random, compact: bool, bad_share: float) -> list[tuple[list, list]]:
    polls = []
    for _ in range(10):
        keys, values = [], []
        for i in range(2000):
            keys.append(f"pump-{rng.randrange(10)}".encode())
            ts = f"2026-11-30T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
            row = [round(rng.gauss(0, 1), 4) for _ in SENSORS]
            if rng.random() < bad_share:
                values.append(b'{"ts": 1, "values": {')
            elif compact:
                values.append(json.dumps([ts, *row]).encode())
            else:
                values.append(json.dumps({"ts": ts, "values": dict(zip(SENSORS, row, strict=True))}).encode())
        polls.append((keys, values))
    return polls


def polls_of_rows(rng: np.random.Generator, missing_share: float) -> list[tuple[np.ndarray, np.ndarray]]:
    polls = []
    for k in range(40):
        values = rng.normal(size=(500, len(SENSORS)))
        values[rng.random(values.shape) < missing_share] = np.nan
        polls.append((1000.0 * k * 500 + np.arange(500, dtype=float), values))
    return polls


def parse(module: ModuleType, polls: list[tuple[list, list]]) -> tuple[float, list[Any]]:
    parser = module.ReadingParser(SENSORS)
    out = []
    t0 = time.process_time()
    for keys, values in polls:
        out.append(parser.parse_batch(keys, values))
    cpu = (time.process_time() - t0) / sum(len(v) for _, v in polls)
    dead = [[(i, e.reason, str(e)) for i, e in b.invalid] for b in out]
    return cpu, [(b.index.tolist(), b.assets, b.ts.tobytes(), b.values.tobytes()) for b in out] + dead


def window(module: ModuleType, polls: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[Any]]:
    buffers = module.WindowBuffers(60, len(SENSORS), max_gap_seconds=300.0, max_fill_rows=3)
    made = []
    t0 = time.process_time()
    for k, (ts, values) in enumerate(polls):
        made.append(buffers.extend("a", 0, ts, values, np.arange(k * 500, (k + 1) * 500)))
    cpu = (time.process_time() - t0) / sum(len(t) for t, _ in polls)
    return cpu, [(m.ends.tobytes(), np.asarray(m.windows).tobytes()) for m in made]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare against")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    baseline = {
        "messages": module_at(args.baseline, "connectors/messages.py"),
        "buffers": module_at(args.baseline, "connectors/buffers.py"),
    }
    current = {"messages": current_messages, "buffers": current_buffers}
    cases: list[tuple[str, str, Any]] = []
    for compact in (False, True):
        for bad in (0.0, 0.005):
            form = "compact" if compact else "object"
            polls = polls_of_messages(random.Random(1), compact, bad)
            cases.append((f"parse, {form} form, {bad:.1%} dead letters", "messages", polls))
    for missing in (0.0, 0.001, 0.02):
        rows = polls_of_rows(np.random.default_rng(2), missing)
        cases.append((f"window, {missing:.1%} of values missing", "buffers", rows))
    print(f"baseline = {args.baseline}, current = working tree; CPU us per message (parse) or row (window), "
          f"median [range] of {args.runs} interleaved rounds")  # fmt: skip
    print(f"{'case':44} {'baseline':>20} {'current':>20} {'ratio':>7}")
    same = True
    for name, kind, polls in cases:
        step = parse if kind == "messages" else window
        times: dict[str, list[float]] = {"baseline": [], "current": []}
        for _ in range(args.runs):
            outputs = {}
            for label, modules in (("baseline", baseline), ("current", current)):
                cpu, outputs[label] = step(modules[kind], polls)
                times[label].append(cpu * 1e6)
            same &= outputs["baseline"] == outputs["current"]
        b, c = (statistics.median(times[k]) for k in ("baseline", "current"))
        shown = {k: f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for k, v in times.items()}
        print(f"{name:44} {shown['baseline']:>20} {shown['current']:>20} {b / c:6.2f}x")
    if not same:
        print("the two gave different readings or windows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
