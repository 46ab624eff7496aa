"""`memae-ts info`: what is inside a model bundle."""

from __future__ import annotations

import argparse
import json
from typing import Any

from memae_ts.cli.commands.common import formatter

EPILOG = """\
examples:
  memae-ts info pump-model
  memae-ts info pump-model --json     the full config.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "info", help="describe a model bundle", epilog=EPILOG, formatter_class=formatter()
    )
    p.add_argument("model", help="model bundle directory")
    p.add_argument("--json", action="store_true", help="print the whole configuration as JSON")
    p.set_defaults(handler=run)


def mode_lines(config: dict) -> list[str]:  # type: ignore[type-arg]
    """The operating modes of a bundle (memae_ts.detection.modes): share of the training windows and
    typical sensor values (median, original units), then the novelty threshold and alarm rule."""
    modes = config.get("modes")
    if not isinstance(modes, dict):
        return [
            "  modes          none in this bundle (trained before memae-ts had operating modes; "
            "refit to get modes and the novel-mode score)"
        ]
    sensors = list(config["sensors"])
    lines = [
        f"  modes          {len(modes['modes'])} operating mode(s) learned from {modes['n_windows']} "
        f"{modes['source']} (silhouette per k: "
        + ", ".join(f"{k}: {'-' if v is None else f'{v:.2f}'}" for k, v in modes["silhouette"].items())
        + ")"
    ]
    width = max(len(s) for s in [*sensors, "share of windows"])
    listed = modes["modes"]

    def row(label: str, cells: list[str]) -> str:
        return f"    {label:<{width}}  " + "  ".join(f"{c:>10}" for c in cells)

    lines.append(row("", [f"mode {m['mode']}" for m in listed]))
    lines.append(row("share of windows", [f"{m['share']:.1%}" for m in listed]))
    lines.append(row("memory slots", [str(m["slots"]) for m in listed]))
    lines.append("    median reading in the mode's windows (original units):")
    for sensor in sensors:
        values = [m["median"].get(sensor) for m in listed]
        lines.append(row(sensor, ["-" if v is None else f"{v:.4g}" for v in values]))
    novelty = modes["novelty"]
    rule = "reconstruction only"
    if modes.get("combine") == "max":
        rule = "the larger of reconstruction and novelty"
    lines.append(
        f"  novelty        {novelty['measure']}; threshold {novelty['threshold']['value']:.4g} "
        f"({novelty['threshold']['method']}); alarms on: {rule}"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    from memae_ts.engines.bundle import load_bundle

    bundle = load_bundle(args.model)
    config = bundle.config
    if args.json:
        print(json.dumps(config, indent=2))
        return 0
    network = config["network"]
    memory = network.get("memory")
    training = config.get("training", {})
    n_params = sum(int(w.size) for w in bundle.weights.values())
    lines = [
        f"model {bundle.path} (id {config['model_id']}, format {config['format_version']}, "
        f"memae-ts {config.get('library_version')}, created {config.get('created_at')})",
        f"  architecture   {network['kind']}, window {config['window']}, {n_params:,} parameters",
        f"  sensors ({len(config['sensors'])})    {', '.join(config['sensors'])}",
        f"  scaler         {config['scaler']['kind']}",
        f"  score          {bundle.scoring.describe()}",
        f"  threshold      {config['threshold']['value']:.6g} ({config['threshold']['method']})",
        *calibration_lines(config),
    ]
    if memory:
        lines.append(
            f"  memory         {memory['slots']} slots × {memory['dim']}, {memory['addressing']} addressing, "
            f"temperature {memory['temperature']:.4g}, shrink λ {memory['shrink_threshold']:.4g}"
        )
        usage = training.get("memory_usage")
        if usage:
            lines.append(
                f"  memory use     {usage['slots_used']} of {usage['slots']} slots addressed on held-out "
                f"windows, {usage['mean_active_per_read']:.1f} active per read"
            )
        lines += mode_lines(config)
    else:
        lines.append("  memory         none (plain autoencoder)")
    if training:
        lines.append(
            f"  training       {training.get('data_source')}: {training.get('n_rows')} rows, "
            f"{training.get('n_train_windows')} windows; best epoch {training.get('best_epoch')} "
            f"of {training.get('epochs_run')}"
        )
        lines.append(f"  fingerprint    {training.get('data_fingerprint', '')[:16]}…")
        lines += range_lines(config)
    data = config.get("data")
    if data:
        time = data.get("time") or {}
        if data.get("first_time"):
            lines.append(f"  time range     {data['first_time']} .. {data['last_time']}")
        if time:
            lines.append(f"  time format    {time.get('format')}; {time.get('timezone')}")
        if data.get("sampling"):
            lines.append(f"  sampling       {data['sampling']}")
        for column, reason in data.get("ignored", []):
            lines.append(f"  ignored        {column!r}: {reason}")
        if (data.get("training") or {}).get("note"):
            lines.append(f"  labels         {data['training']['note']}")
    resample = config.get("resample")
    if resample:
        lines.append(
            f"  resampled      every {resample['period_seconds']:g} s, {resample['method']} up to "
            f"{resample['limit_seconds']:g} s (score and edge do the same)"
        )
    if resample:
        lines.append("  gaps           a grid row with a missing value splits the series (no other fill)")
    else:
        lines.append(
            f"  gaps           split beyond {config.get('max_gap_seconds')} s; fill up to "
            f"{config.get('max_fill_rows')} missing rows"
        )
    print("\n".join(lines))
    return 0


def range_lines(config: dict[str, Any]) -> list[str]:
    """The training range per sensor the edge daemon's drift metric compares readings with
    (memae_ts.training.training_range), or that the bundle has none."""
    raw = (config.get("training") or {}).get("sensor_range")
    if not isinstance(raw, dict):
        return [
            "  range          unavailable (fitted before memae-ts stored the training range; the edge "
            "daemon counts no out-of-range readings for it: refit to get it)"
        ]
    cells = [
        f"{s} {'-' if lo is None else f'{lo:.4g}'}..{'-' if hi is None else f'{hi:.4g}'}"
        for s, lo, hi in zip(config["sensors"], raw["min"], raw["max"], strict=False)
    ]
    return ["  range          " + ", ".join(cells) + " (training rows; edge drift metric)"]


def calibration_lines(config: dict[str, Any]) -> list[str]:
    """The alarm rule, the false-alarm budget the threshold corresponds to (episodes after the
    rule, on the calibration slice), and how tail probabilities are computed."""
    from memae_ts.detection.alarms import AlarmRule

    lines = []
    raw_rule = config.get("alarm")
    rule = AlarmRule.from_config(raw_rule)
    note = "" if raw_rule is not None else " (none stored: a bundle older than the rule gets the defaults)"
    lines.append(f"  alarm rule     {rule.describe()}{note}")
    threshold = config.get("threshold", {})
    if threshold.get("method") == "budget":
        lines.append(
            f"  budget         {threshold['budget']:g} false alarm(s) {threshold['budget_unit']}, "
            f"threshold found by {_FOUND_BY.get(threshold.get('found_by'), threshold.get('found_by'))}"
        )
    expected = threshold.get("expected")
    if expected:
        per_day = expected.get("episodes_per_day")
        rate = f"{per_day:.3g} per day" if per_day is not None else ""
        per_1000 = f"{expected['episodes_per_1000_windows']:.3g} per 1000 windows"
        how = expected.get("estimated_by")
        slice_text = f"{expected['calibration_windows']} windows"
        if expected.get("calibration_days") is not None:
            slice_text += f", {expected['calibration_days']:.3g} days"
        if how == "bound":
            said = f"fewer than {rate or per_1000} (no episode in the calibration slice, {slice_text})"
        else:
            word = "counted on" if how == "counted" else "extrapolated (declustered POT) from"
            said = f"{rate + ', ' if rate else ''}{per_1000}; {word} the calibration slice ({slice_text})"
        lines.append(f"  false alarms   expected on normal operation: {said}")
        lines.append(f"  calibrated on  {threshold.get('calibration_slice', 'the held-out windows')}")
    elif "expected" in threshold:
        lines.append("  false alarms   not estimated (streamed fit: the held-out windows are a sample)")
    tail = config.get("tail")
    if tail is None:
        lines.append("  tail prob.     none (a bundle older than tail probabilities: fit again to get them)")
    elif tail["method"] == "gpd":
        lines.append(
            f"  tail prob.     from {tail['n_windows']} normal windows, GPD tail above {tail['u']:.4g} "
            f"({tail['clusters']} declustered peaks, shape {tail['gpd_shape']:.3g})"
        )
    else:
        lines.append(
            f"  tail prob.     from {tail['n_windows']} normal windows, empirical only ({tail['clusters']} "
            f"declustered peaks above the 98 % level, too few to fit a tail)"
        )
    return lines


_FOUND_BY = {
    "counted": "running the rule on the calibration slice",
    "gpd": "declustered peaks over threshold (the budget is rarer than the slice shows)",
    "max": "the largest persisted score x the margin (too few peaks to fit a tail: the budget is rarer "
    "than the calibration slice can resolve)",
}
