"""`memae-ts info`: what is inside a model bundle."""

from __future__ import annotations

import argparse
import json

from memae_ts.commands.common import formatter

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


def run(args: argparse.Namespace) -> int:
    from memae_ts.bundle import load_bundle

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
        f"  threshold      {config['threshold']['value']:.6g} ({config['threshold']['method']})",
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
    else:
        lines.append("  memory         none (plain autoencoder)")
    if training:
        lines.append(
            f"  training       {training.get('data_source')}: {training.get('n_rows')} rows, "
            f"{training.get('n_train_windows')} windows; best epoch {training.get('best_epoch')} "
            f"of {training.get('epochs_run')}"
        )
        lines.append(f"  fingerprint    {training.get('data_fingerprint', '')[:16]}…")
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
