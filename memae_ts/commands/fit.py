"""`memae-ts fit`: learn normal operation from a CSV and write a model bundle."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from memae_ts.commands.common import add_data_options, formatter, parse_duration_seconds

EPILOG = """\
examples:
  memae-ts fit sensors.csv                           defaults, bundle written to sensors-model/
  memae-ts fit sensors.csv -o pump7 --window 64      longer windows
  memae-ts fit plant.csv --asset-column machine      one model for several identical machines
  memae-ts fit sensors.csv --no-memory               plain autoencoder (ablation)
  memae-ts fit sensors.csv --shrink-threshold 0      MemAE without sparsity (ablation)

Train on a period of normal operation: every pattern in the training data is learned as normal.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "fit", help="train a model on normal operating data", epilog=EPILOG, formatter_class=formatter()
    )
    p.add_argument("csv", help="training data: a CSV with a timestamp column and numeric sensor columns")
    p.add_argument("-o", "--output", help="bundle directory to write (default: <csv name>-model)")
    add_data_options(p, training=True)
    w = p.add_argument_group("windows")
    w.add_argument("--window", type=int, default=32, help="rows per window (default 32)")
    w.add_argument("--stride", type=int, default=1, help="rows between training windows (default 1)")
    w.add_argument(
        "--max-gap",
        help="split the series where consecutive timestamps are further apart (seconds or 5min, 2h; "
        "default 3 sampling periods)",
    )
    w.add_argument(
        "--max-fill", type=int, default=3, help="forward-fill at most this many missing rows (default 3)"
    )
    w.add_argument("--scaler", choices=["standard", "robust"], default="standard", help="per-sensor scaling")
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=["conv", "mlp"], default="conv", help="1D-conv (default) or MLP")
    m.add_argument("--channels", type=int, nargs="+", default=[32, 64], help="conv channels per level")
    m.add_argument("--hidden", type=int, nargs="+", default=[64, 32], help="MLP hidden sizes")
    m.add_argument("--latent", type=int, default=32, help="latent size C (memory slot width)")
    m.add_argument("--activation", choices=["relu", "leaky_relu", "tanh"], default="leaky_relu")
    m.add_argument("--memory-slots", type=int, default=200, help="memory size N (default 200)")
    m.add_argument("--no-memory", action="store_true", help="plain autoencoder, no memory")
    m.add_argument(
        "--shrink-threshold", type=float, help="hard-shrinkage λ (default 1/N; 0 turns sparsity off)"
    )
    m.add_argument("--no-sparsity", action="store_true", help="same as --shrink-threshold 0")
    m.add_argument(
        "--addressing",
        choices=["cosine", "dot"],
        default="cosine",
        help="memory similarity: cosine (paper) or dot (the authors' code)",
    )
    m.add_argument(
        "--temperature",
        type=float,
        default=0.05,
        help="softmax temperature on the similarities (default 0.05; see README)",
    )
    m.add_argument("--learn-temperature", action="store_true", help="learn the temperature")
    m.add_argument("--entropy-weight", type=float, default=2e-4, help="α, the entropy loss weight")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    t.add_argument(
        "--validation-fraction", type=float, default=0.2, help="share held out at the end (default 0.2)"
    )
    t.add_argument("--seed", type=int, default=0, help="random seed: same seed, same model")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c = p.add_argument_group("threshold")
    c.add_argument("--threshold", choices=["quantile", "pot"], default="quantile", help="calibration rule")
    c.add_argument(
        "--threshold-quantile", type=float, default=0.995, help="quantile of held-out scores (default 0.995)"
    )
    c.add_argument("--pot-risk", type=float, default=1e-3, help="POT risk level (default 1e-3)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from memae_ts.data import load_csv
    from memae_ts.estimator import MemAE

    output = args.output or str(Path(args.csv).with_suffix("")) + "-model"
    model = MemAE(
        window=args.window,
        stride=args.stride,
        arch=args.arch,
        channels=tuple(args.channels),
        hidden=tuple(args.hidden),
        latent=args.latent,
        activation=args.activation,
        use_memory=not args.no_memory,
        memory_slots=args.memory_slots,
        addressing=args.addressing,
        temperature=args.temperature,
        learn_temperature=args.learn_temperature,
        shrink_threshold=0.0 if args.no_sparsity else args.shrink_threshold,
        entropy_weight=args.entropy_weight,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        validation_fraction=args.validation_fraction,
        scaler=args.scaler,
        threshold=args.threshold,
        threshold_quantile=args.threshold_quantile,
        pot_risk=args.pot_risk,
        max_gap=parse_duration_seconds(args.max_gap),
        max_fill=args.max_fill,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_column=args.label_column,
        exclude=tuple(args.exclude),
        seed=args.seed,
        device=args.device,
        verbose=not args.quiet and sys.stderr.isatty(),
    )
    data = load_csv(
        args.csv,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_column=args.label_column,
        exclude=args.exclude,
        sep=args.sep,
    )
    model.fit(data)
    path = model.save(output)
    training = model.bundle_.config["training"]
    print(
        f"model written to {os.path.abspath(path)}\n"
        f"  sensors ({len(model.sensors_)}): {', '.join(model.sensors_)}\n"
        f"  windows: {training['n_train_windows']} training, {training['n_val_windows']} held out; "
        f"best epoch {training['best_epoch']} of {training['epochs_run']}\n"
        f"  threshold ({model.bundle_.config['threshold']['method']}): {model.threshold_:.6g}"
    )
    return 0
