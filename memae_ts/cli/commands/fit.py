"""`memae-ts fit`: learn normal operation from a CSV and write a model bundle."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memae_ts.estimator import MemAE

from memae_ts.cli.commands.common import (
    add_alarm_options,
    add_data_options,
    add_resample_options,
    formatter,
    load_training_data,
    parse_duration_seconds,
    persistence,
    read_options,
)

EPILOG = """\
examples:
  memae-ts fit sensors.csv                           defaults, bundle written to sensors-model/
  memae-ts fit sensors.csv -o pump7 --window 64      longer windows
  memae-ts fit plant.csv --asset-column machine      one model for several identical machines
  memae-ts fit sensors.csv --no-memory               plain autoencoder (ablation)
  memae-ts fit sensors.csv --shrink-threshold 0      MemAE without sparsity (ablation)
  memae-ts fit export.csv --dayfirst --tz Europe/Berlin --encoding cp1252
                                                     a German historian export in plant local time
  memae-ts fit pi-export.csv --resample 10s          by-exception data onto a 10 s grid
  memae-ts fit history.parquet                       Parquet file or directory of Parquet files
  memae-ts fit history/ --memory-limit 4GB           Parquet larger than the limit is streamed
  cat sensors.csv | memae-ts fit - -o pump7          from standard input
  torchrun --nproc-per-node 2 -m memae_ts.cli fit history.parquet -o pump7
                                                     several processes (cores, GPUs or machines)

Run 'memae-ts inspect DATA' first to see how the file is read; fit prints the same summary.
Rows labelled anomalous (a column named anomaly or label, or --label-column) are left out of
training and calibration (--train-on-labelled keeps them).

Train on a period of normal operation: every pattern in the training data is learned as normal.
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from memae_ts.estimator import MemAE

    D = MemAE().get_params()  # one source of defaults: the CLI follows the Python API
    p = subparsers.add_parser(
        "fit", help="train a model on normal operating data", epilog=EPILOG, formatter_class=formatter()
    )
    p.add_argument(
        "csv",
        metavar="DATA",
        help="training data: a CSV (or Parquet, .xlsx, '-' for stdin) with a time column and sensor columns",
    )
    p.add_argument("-o", "--output", help="bundle directory to write (default: <csv name>-model)")
    add_data_options(p, training=True)
    w = p.add_argument_group("windows")
    w.add_argument("--window", type=int, default=D["window"], help="rows per window (default %(default)s)")
    w.add_argument(
        "--stride", type=int, default=D["stride"], help="rows between training windows (default %(default)s)"
    )
    w.add_argument(
        "--max-gap",
        help="split the series where consecutive timestamps are further apart (seconds or 5min, 2h; "
        "default 3 sampling periods)",
    )
    w.add_argument(
        "--max-fill",
        type=int,
        default=D["max_fill"],
        help="forward-fill at most this many missing rows (default %(default)s)",
    )
    add_resample_options(w)
    w.add_argument(
        "--train-on-labelled",
        action="store_true",
        help="also train on rows labelled anomalous (default: windows touching them are left out)",
    )
    w.add_argument("--scaler", choices=["standard", "robust"], default=D["scaler"], help="per-sensor scaling")
    w.add_argument(
        "--min-relative-scale",
        type=float,
        default=D["min_relative_scale"],
        help="floor each sensor's scale at this fraction of its typical level (default %(default)s): "
        "a change below 1%% of the reading is not evidence by itself",
    )
    w.add_argument(
        "--min-span-scale",
        type=float,
        default=D["min_span_scale"],
        help="floor each sensor's scale at this fraction of its training span (1st-99th percentile "
        "range; the same in degC and K, gauge or absolute); 0 = off (default %(default)s)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--arch", choices=["conv", "mlp"], default=D["arch"], help="1D-conv or MLP (default %(default)s)"
    )
    m.add_argument(
        "--channels", type=int, nargs="+", default=list(D["channels"]), help="conv channels per level"
    )
    m.add_argument("--hidden", type=int, nargs="+", default=list(D["hidden"]), help="MLP hidden sizes")
    m.add_argument("--latent", type=int, default=D["latent"], help="latent size C (memory slot width)")
    m.add_argument("--activation", choices=["relu", "leaky_relu", "tanh"], default=D["activation"])
    m.add_argument(
        "--memory-slots", type=int, default=D["memory_slots"], help="memory size N (default %(default)s)"
    )
    m.add_argument("--no-memory", action="store_true", help="plain autoencoder, no memory")
    m.add_argument(
        "--shrink-threshold", type=float, help="hard-shrinkage λ (default 1/N; 0 turns sparsity off)"
    )
    m.add_argument("--no-sparsity", action="store_true", help="same as --shrink-threshold 0")
    m.add_argument(
        "--addressing",
        choices=["cosine", "dot"],
        default=D["addressing"],
        help="memory similarity: cosine (paper) or dot (the authors' code)",
    )
    m.add_argument(
        "--temperature",
        type=float,
        default=D["temperature"],
        help="softmax temperature on the similarities (default 0.05 for cosine, 1 for dot; see README)",
    )
    m.add_argument("--learn-temperature", action="store_true", help="learn the temperature")
    m.add_argument(
        "--entropy-weight", type=float, default=D["entropy_weight"], help="α, the entropy loss weight"
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=D["epochs"], help="maximum epochs (default %(default)s)")
    t.add_argument(
        "--steps-per-epoch",
        type=int,
        default=D["steps_per_epoch"],
        help="batches per epoch, sampled over all windows (default: a full pass up to 100,000 windows, "
        "so an epoch takes the same time whatever the length of the history)",
    )
    t.add_argument("--batch-size", type=int, default=D["batch_size"])
    t.add_argument("--lr", type=float, default=D["learning_rate"], help="Adam learning rate")
    t.add_argument("--patience", type=int, default=D["patience"], help="early-stopping patience in epochs")
    t.add_argument(
        "--validation-fraction",
        type=float,
        default=D["validation_fraction"],
        help="share held out at the end (default %(default)s)",
    )
    t.add_argument("--seed", type=int, default=D["seed"], help="random seed: same seed, same model")
    t.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="memory the fit may hold, e.g. 4GB or 512MB; a Parquet input estimated to need more is "
        "streamed by row group in passes (default: half of this machine's memory)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c = p.add_argument_group("threshold")
    c.add_argument(
        "--threshold", choices=["quantile", "pot"], default=D["threshold"], help="calibration rule"
    )
    c.add_argument(
        "--threshold-quantile",
        type=float,
        default=D["threshold_quantile"],
        help="quantile of held-out scores (default %(default)s)",
    )
    c.add_argument(
        "--pot-risk", type=float, default=D["pot_risk"], help="POT risk level (default %(default)s)"
    )
    c.add_argument(
        "--threshold-margin",
        type=float,
        default=D["threshold_margin"],
        help="multiply the calibrated threshold by this (default %(default)s): held-out data from the "
        "training period understates later normal variation",
    )
    c.add_argument(
        "--score-reduction",
        choices=["mean", "max", "last_rows"],
        default=D["score_reduction"],
        help="how a window's squared reconstruction errors become its score, the same in every engine and "
        "in calibration: mean over rows and sensors (default); max = the worst sensor's mean (a fault in "
        "one sensor of many is not diluted); last_rows = rows weighted towards the window's newest, so a "
        "fault that has passed stops alarming sooner (docs/benchmarks.md measured it: fewer false alarms)",
    )
    c.add_argument(
        "--score-half-life",
        type=float,
        metavar="ROWS",
        help="last_rows only: a row's weight halves every ROWS rows back from the newest (default: a quarter "
        "of --window)",
    )
    c.add_argument(
        "--combine",
        choices=["reconstruction", "max"],
        default=D["combine"],
        help="what raises an alarm: the reconstruction score only, or the larger of it and the novel-mode "
        "score (each 1.0 at its own threshold; default %(default)s; both are always reported)",
    )
    budget = c.add_mutually_exclusive_group()
    budget.add_argument(
        "--false-alarms-per-day",
        type=float,
        metavar="RATE",
        help="set the threshold so that normal operation gives this many alarm episodes a day (after the "
        "alarm rule), calibrated on the last validation-fraction/2 of the rows, held out from training "
        "and early stopping; replaces quantile x margin",
    )
    budget.add_argument(
        "--false-alarms-per-1000-windows",
        type=float,
        metavar="RATE",
        help="the same budget per 1000 scored windows (for data without a time column)",
    )
    add_alarm_options(p, fit=True)
    p.set_defaults(handler=run)


def model_from_args(args: argparse.Namespace) -> MemAE:
    from memae_ts.estimator import MemAE

    return MemAE(
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
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        validation_fraction=args.validation_fraction,
        scaler=args.scaler,
        threshold=args.threshold,
        threshold_quantile=args.threshold_quantile,
        pot_risk=args.pot_risk,
        threshold_margin=args.threshold_margin,
        score_reduction=args.score_reduction,
        score_half_life=args.score_half_life,
        **alarm_params(args),
        min_relative_scale=args.min_relative_scale,
        min_span_scale=args.min_span_scale,
        max_gap=parse_duration_seconds(args.max_gap),
        max_fill=args.max_fill,
        time_column=args.time_column,
        asset_column=args.asset_column,
        label_column=args.label_column,
        exclude=tuple(args.exclude),
        time_format=args.time_format,
        dayfirst=args.dayfirst,
        tz=args.tz,
        resample=args.resample,
        resample_method=args.resample_method,
        resample_limit=args.resample_limit,
        train_on_labelled=args.train_on_labelled,
        seed=args.seed,
        device=args.device,
        verbose=not args.quiet and sys.stderr.isatty(),
        memory_limit=args.memory_limit,
        combine=args.combine,
    )


def alarm_params(args: argparse.Namespace) -> dict[str, Any]:
    """The alarm rule and budget options as MemAE parameters (defaults where not given)."""
    k, n = persistence(args.persistence)
    given = {
        "alarm_k": k,
        "alarm_n": n,
        "alarm_clear": args.clear_level,
        "alarm_min_windows": args.min_windows,
        "false_alarms_per_day": args.false_alarms_per_day,
        "false_alarms_per_1000_windows": args.false_alarms_per_1000_windows,
    }
    return {key: value for key, value in given.items() if value is not None}


def default_output(data_path: str) -> str:
    if data_path == "-":
        return "stdin-model"
    return str(Path(data_path.rstrip("/\\")).with_suffix("")) + "-model"


def run(args: argparse.Namespace) -> int:

    output = args.output or default_output(args.csv)
    model = model_from_args(args)
    from memae_ts.training.streaming import fit_streaming, streaming_plan
    from memae_ts.training.train import distributed_from_env

    main = distributed_from_env(args.device).is_main  # under torchrun, rank 0 speaks and saves
    plan = streaming_plan(args.csv, model.memory_limit)  # Parquet too large to read whole
    if plan is not None:
        options, duplicates = read_options(args), args.drop_duplicates
        say = functools.partial(print, flush=True)
        fit_streaming(model, args.csv, plan=plan, options=options, drop_duplicates=duplicates, report=say)
        return _report(model, output) if main else 0
    data = load_training_data(args)
    if main:
        print(data.summary.format(short=True), flush=True)  # what was read, before the long part
    model.fit(data)
    return _report(model, output) if main else 0


def _report(model: MemAE, output: str) -> int:
    """Save the bundle and say what fitting left out and what was written."""
    from memae_ts.io.summary import DataSummary

    path = model.save(output)
    training = model.bundle_.config["training"]
    fitted = DataSummary.from_dict(model.bundle_.config["data"])
    print("\n".join(fitted.fit_lines()))
    print(
        f"model written to {os.path.abspath(path)}\n"
        f"  sensors ({len(model.sensors_)}): {', '.join(model.sensors_)}\n"
        f"  windows: {training['n_train_windows']} training, {training['n_val_windows']} held out; "
        f"best epoch {training['best_epoch']} of {training['epochs_run']}\n"
        f"  threshold ({model.bundle_.config['threshold']['method']}): {model.threshold_:.6g}"
    )
    from memae_ts.cli.commands.info import calibration_lines

    print("\n".join(calibration_lines(model.bundle_.config)))
    return 0
