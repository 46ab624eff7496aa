"""`memae-ts refit MODEL DATA -o NEW`: train again with MODEL's settings on recent data and
compare the two models on a held-out slice before an operator swaps them.

Why a command of its own: when the plant drifts (the edge daemon's MemaeTsModelStale or
MemaeTsDriftingOutOfRange alert), the fix is a model trained on recent normal operation, but
swapping blindly replaces a known model by an unknown one. refit reuses every setting of MODEL
(network, windows, gaps, scaling, threshold rule, alarm rule, seed, and how the historian export
is read), holds out the last part of each machine's rows of DATA, trains NEW on the rest, scores
both models on the held-out slice and prints a comparison and a recommendation with its rule.
NEW is always written; the operator decides (docs/edge.md, "Refit and swap a model").
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from memae_ts.cli.commands.common import formatter

if TYPE_CHECKING:
    from memae_ts.estimator import MemAE
    from memae_ts.io.data import SensorData

EPILOG = """\
examples:
  memae-ts refit pump-model last-month.csv -o pump-model-2
  memae-ts refit pump-model last-month.csv -o pump-model-2 --holdout 0.3 --max-false-alarm-rate 0.02

The last --holdout share of each machine's rows (the tail of DATA, in time) is kept out of
training; both models score it. Train on a period you know was normal: rows labelled anomalous
are left out of training as in fit, and out of the false-alarm rate.

Recommendation rule: swap to NEW when MODEL's false-alarm rate on the held-out slice (windows at
or above its threshold, on rows not labelled anomalous) is above --max-false-alarm-rate and NEW's
is lower; when DATA has labelled anomalies, NEW must also flag at least as many labelled rows.
Otherwise keep MODEL.
"""

# The settings printed as "reused": what defines the model (all of MODEL's are reused).
SHOWN = (
    "arch", "window", "channels", "hidden", "latent", "memory_slots", "epochs", "seed", "scaler", "threshold",
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "refit",
        help="train again with a model's settings on new data and compare both on a held-out slice",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("model", metavar="MODEL", help="the model bundle in service")
    p.add_argument("csv", metavar="DATA", help="recent normal operation, read like MODEL's training data")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write the new model to")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="share of each machine's last rows kept out of training to compare on (default %(default)s)",
    )
    p.add_argument(
        "--max-false-alarm-rate",
        type=float,
        default=0.01,
        help="MODEL's false-alarm rate on the held-out slice above which a swap is recommended "
        "(default %(default)s = 1 %% of windows)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.errors import DataError

    if not 0.05 <= args.holdout <= 0.9:
        raise DataError(f"--holdout {args.holdout}: give a share between 0.05 and 0.9 of the rows")
    if not 0 <= args.max_false_alarm_rate < 1:
        raise DataError(f"--max-false-alarm-rate {args.max_false_alarm_rate}: give a share in [0, 1)")
    from memae_ts.estimator import MemAE, load

    old = load(args.model)
    data = _read_like(old, args.csv)
    train, held = _split(data, args.holdout, old.window)
    new = MemAE()
    for key, value in old.bundle_.config.get("training", {}).get("params", {}).items():
        if hasattr(new, key):
            setattr(new, key, tuple(value) if isinstance(value, list) else value)
    new.verbose = not args.quiet and sys.stderr.isatty()
    print(data.summary.format(short=True), flush=True)
    shown = ", ".join(f"{k} {_fmt_param(getattr(new, k, None))}" for k in SHOWN if hasattr(new, k))
    print(f"settings       reused from {args.model}: {shown} (and every other setting)", flush=True)
    print(
        f"split          training on {len(train)} rows, comparing on the last {args.holdout:.0%} of each "
        f"machine's rows ({len(held)} rows{_span(held)})",
        flush=True,
    )
    new.fit(train)
    path = new.save(args.output)
    old_row = _compare(old, held)
    new_row = _compare(new, held)
    _print_table(args.model, path, old_row, new_row)
    swap, reason = _recommend(old_row, new_row, args.max_false_alarm_rate)
    print(f"recommendation {'swap to NEW' if swap else 'keep MODEL'}: {reason}")
    print(
        f"rule           swap when MODEL's false-alarm rate on the held-out slice is above "
        f"{args.max_false_alarm_rate:.1%} (--max-false-alarm-rate) and NEW's is lower; with labelled "
        "anomalies NEW must also flag at least as many labelled rows"
    )
    print(f"new model      written to {path}; to serve it, replace MODEL's bundle directory and send SIGHUP")
    return 0


def _fmt_param(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def _read_like(old: MemAE, path: str) -> SensorData:
    """DATA read as MODEL's training data was: its time, asset and label columns, reading
    options (time format, day first, time zone) and exactly its sensors (a missing one is an
    error naming it)."""
    from memae_ts.io.data import load_csv

    return load_csv(
        path,
        time_column=old.time_column,
        asset_column=old.asset_column,
        sensors=list(old.sensors_),
        label_column=old.label_column,
        detect_labels=True,
        options=old.read_options(),
    )


def _split(data: SensorData, holdout: float, window: int) -> tuple[SensorData, SensorData]:
    """The first (1 - holdout) of each machine's rows, and the rest (the tail, in time)."""
    from memae_ts.errors import DataError
    from memae_ts.io.data import asset_rows, take_rows

    train: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for rows in asset_rows(data):
        cut = round(len(rows) * (1 - holdout))
        train.append(rows[:cut])
        held.append(rows[cut:])
    held_rows = np.concatenate(held)
    if min(len(h) for h in held) < 2 * window:
        raise DataError(
            f"{data.source}: the held-out slice of a machine has fewer than {2 * window} rows (2 windows); "
            "give more data or a larger --holdout"
        )
    return take_rows(data, np.concatenate(train)), take_rows(data, held_rows)


def _span(data: SensorData) -> str:
    if data.timestamps is None or not len(data):
        return ""
    return f", {data.timestamps.min():%Y-%m-%d %H:%M} .. {data.timestamps.max():%Y-%m-%d %H:%M}"


def _compare(model: MemAE, held: SensorData) -> dict[str, Any]:
    """What the comparison table shows for one model on the held-out slice."""
    from memae_ts.training.training_range import outside_share

    data, rows = model.score_rows(held)
    normalised = rows.normalised
    scored = ~np.isnan(normalised)
    labels = data.labels.astype(bool) if data.labels is not None else np.zeros(len(data), dtype=bool)
    normal = scored & ~labels
    values = normalised[normal]
    out: dict[str, Any] = {
        "windows": int(normal.sum()),
        "false_alarm_rate": float((values >= 1.0).mean()) if len(values) else float("nan"),
        "episodes": len(rows.episodes) if rows.alarm is not None else None,
        "p50": float(np.quantile(values, 0.5)) if len(values) else float("nan"),
        "p95": float(np.quantile(values, 0.95)) if len(values) else float("nan"),
        "p99": float(np.quantile(values, 0.99)) if len(values) else float("nan"),
        "max": float(values.max()) if len(values) else float("nan"),
        "outside": outside_share(model.bundle_.config, list(model.sensors_), data.values),
        "labelled": int((scored & labels).sum()),
        "flagged": int(((normalised >= 1.0) & scored & labels).sum()),
    }
    return out


def _print_table(old_name: str, new_name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    def pct(x: float | None) -> str:
        return "unknown (old bundle)" if x is None else f"{100 * x:.1f} %"

    lines: list[tuple[str, str, str]] = [
        ("", "MODEL (in service)", "NEW (refit)"),
        ("bundle", old_name, new_name),
        ("windows compared", str(old["windows"]), str(new["windows"])),
        ("false alarms (windows >= 1)", pct(old["false_alarm_rate"]), pct(new["false_alarm_rate"])),
    ]
    if old["episodes"] is not None or new["episodes"] is not None:
        lines.append(("alarm episodes", str(old["episodes"]), str(new["episodes"])))
    for q in ("p50", "p95", "p99", "max"):
        lines.append((f"normalised score {q}", f"{old[q]:.3f}", f"{new[q]:.3f}"))
    lines.append(("rows outside training range", pct(old["outside"]), pct(new["outside"])))
    if old["labelled"]:
        flagged = [f"{row['flagged']} of {row['labelled']}" for row in (old, new)]
        lines.append(("labelled rows flagged", flagged[0], flagged[1]))
    width = max(len(a) for a, _, _ in lines) + 2
    middle = max(len(b) for _, b, _ in lines) + 2
    for a, b, c in lines:
        print(f"{a:<{width}}{b:<{middle}}{c}")


def _recommend(old: dict[str, Any], new: dict[str, Any], limit: float) -> tuple[bool, str]:
    """The rule of the epilog; returns (swap, the reason in words)."""
    o, n = old["false_alarm_rate"], new["false_alarm_rate"]
    if not (np.isfinite(o) and np.isfinite(n)):
        return False, "no window on normal rows in the held-out slice to compare on"
    if o <= limit:
        return False, f"MODEL raises {o:.1%} false alarms on the held-out slice, within the {limit:.1%} limit"
    if n >= o:
        return False, f"MODEL raises {o:.1%} false alarms, but NEW does not do better ({n:.1%})"
    if old["labelled"] and new["flagged"] < old["flagged"]:
        return False, (
            f"NEW raises fewer false alarms ({n:.1%} against {o:.1%}) but flags fewer labelled rows "
            f"({new['flagged']} against {old['flagged']})"
        )
    return True, f"MODEL raises {o:.1%} false alarms on the held-out slice (above {limit:.1%}); NEW {n:.1%}"
