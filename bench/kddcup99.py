"""KDDCUP99 with the DAGMM / MemAE protocol: the paper's tabular experiment and its ablation.

Protocol (Zong et al. 2018, followed by Gong et al. 2019; ../shared/data/README.md): the
preprocessed `kdd_cup.npz` has 118 one-hot/min-max features and a label; label 1 (the original
"normal" traffic, 19.7 %) is the anomaly here. Each run draws a random 50 % of the label-0 rows
for training; the test set is the other 50 % plus every label-1 row. Precision, recall and F1
are averaged over runs (20 by default, each with its own seed for split and network).

Threshold rules, all computed from the same scores in every run:
- **dagmm** (headline, as the DAGMM code and the published numbers): the 80th percentile of the
  scores over train and test together (label 1 is ~20 % of all rows). Uses no labels, but it
  does use the known contamination ratio and the unlabelled test scores.
- **test80**: the 80th percentile of the test scores alone. With 33 % anomalies in the test set
  this caps recall at 0.6; shown because the data README mentions it.
- **memae-ts**: the estimator's own rule, the 0.995 quantile of held-out *training* scores (10 % of
  the training rows): what `memae-ts fit` would do, using nothing from the test set.
ROC-AUC and PR-AUC (threshold-free) are reported beside them.

The network is the DAGMM/MemAE compression MLP (118 → 60 → 30 → 10 → 3 → memory of 50 slots →
3 → 10 → 30 → 60 → 118, tanh), trained with Adam at DAGMM's learning rate 1e-4, batch 1024, up to
30 epochs (DAGMM trains 200; 30 is our compute budget) with early stopping on held-out training
rows. Built with `memae_ts.training.model.MemAENet` and trained with `memae_ts.training.train.train`, the same
code `MemAE.fit` uses; the DataFrame path is skipped because at 250k rows × 118 columns it
mostly measures CSV-style column checking. The features are already scaled to [0, 1] by the
DAGMM preprocessing, so no further scaling is applied (as in the paper). The score is the mean
squared reconstruction error, as in `MemAE.score_samples`.

Variants: MemAE (memory + hard shrinkage + entropy loss), plain AE (no memory), and MemAE
without sparsity (λ = 0, entropy weight 0), in the same run on the same split.

Per epoch (`--per-epoch`): training runs the full `--epochs` with no early stopping, and after
every epoch the test rows are scored with that epoch's weights: F1 (dagmm rule), ROC-AUC and
average precision per epoch, plus the epoch early stopping (patience `--patience` on the
held-out loss) would have chosen, read off the same run. This is what shows how much of a
reported F1 is the epoch at which training happened to stop.

Baselines (`--baselines pca iforest`, memae_ts.evaluation.baselines on the same split): PCA T²+Q
(`max(T²/limit, Q/limit)` as the score) and IsolationForest on the rows, both fitted on the
same training rows, scored with the same threshold rules.

Learning rate: 1e-4 here (DAGMM's setting for KDDCUP99); `MemAE`'s own default is 1e-3, which
suits the small sensor windows it is built for (docs/benchmarks.md has both).

Run:  .venv/bin/python bench/kddcup99.py --runs 5   (about 10-20 min on 2 cores)
      .venv/bin/python bench/kddcup99.py --runs 5 --per-epoch --variants memae ae --baselines pca iforest
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.run_options import add_run_options, apply_run_options  # noqa: E402
from memae_ts.evaluation.baselines import make_baseline  # noqa: E402
from memae_ts.evaluation.metrics import average_precision, evaluate, roc_auc  # noqa: E402

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "kddcup99", "kdd_cup.npz")
PUBLISHED: list[tuple[str, float | None, float | None, float]] = [
    ("MemAE (Gong et al. 2019)", 0.9627, 0.9655, 0.9641),
    ("plain AE (Gong et al. 2019)", 0.9328, 0.9356, 0.9342),
    ("MemAE without sparsity (Gong et al. 2019)", None, None, 0.9355),
    ("DAGMM (Zong et al. 2018)", 0.9297, 0.9442, 0.9369),
]
VARIANTS: dict[str, dict[str, Any]] = {
    "memae": {"use_memory": True},
    "ae": {"use_memory": False},
    "memae_nosparse": {"use_memory": True, "shrink_threshold": 0.0, "entropy_weight": 0.0},
}
RULES = ("dagmm", "test80", "memae-ts")
ANOMALY_PERCENTILE = 80.0
VALIDATION_FRACTION = 0.1

log = logging.getLogger("bench.kddcup99")


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as archive:
        kdd = archive["kdd"]
    return kdd[:, :-1].astype(np.float32), kdd[:, -1].astype(np.int64)


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training rows (half the label-0 rows) and of the test rows (the rest)."""
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(labels == 0))
    half = normal.size // 2
    test = np.concatenate([normal[half:], np.flatnonzero(labels == 1)])
    return normal[:half], test


def score_all(net: Any, features: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error of every row."""
    import torch

    scores = np.empty(features.shape[0])
    with torch.inference_mode():
        for start in range(0, features.shape[0], 65536):
            x = torch.from_numpy(features[start : start + 65536][:, None, :])
            recon, _ = net(x)
            scores[start : start + 65536] = ((recon - x) ** 2).mean(dim=(1, 2)).numpy()
    return scores


def holdout(train_rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): 10 % of the training rows for early stopping / calibration."""
    rng = np.random.default_rng(seed + 10_000)
    shuffled = rng.permutation(train_rows)
    n_val = round(shuffled.size * VALIDATION_FRACTION)
    return shuffled[n_val:], shuffled[:n_val]


def quality(
    scores: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray
) -> dict[str, float]:
    """F1 (dagmm rule), ROC-AUC and average precision of one set of scores."""
    y, s = labels[test_rows], scores[test_rows]
    both = np.concatenate([scores[train_rows], s])
    m = evaluate(y, s, float(np.percentile(both, ANOMALY_PERCENTILE)))
    return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"], "roc_auc": roc_auc(y, s),
            "average_precision": average_precision(y, s)}  # fmt: skip


def epoch_hook(
    curve: list[dict[str, float]],
    features: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
) -> Any:
    """`train`'s on_epoch: the test quality of every epoch's weights, appended to `curve`."""

    def hook(epoch: int, net: Any) -> None:
        q = quality(score_all(net, features), labels, train_rows, test_rows)
        curve.append({"epoch": epoch, **q})
        log.info("  epoch %d: F1 %.4f ROC-AUC %.4f", epoch, q["f1"], q["roc_auc"])

    return hook


def early_stop_epoch(val_loss: Sequence[float], patience: int) -> int:
    """The epoch (1-based) whose weights early stopping with `patience` would have kept: the
    best held-out loss before `patience` epochs without improvement (as memae_ts.training.train)."""
    best, best_epoch, stale = float("inf"), 1, 0
    for epoch, loss in enumerate(val_loss, start=1):
        if loss < best - 1e-7:
            best, best_epoch, stale = loss, epoch, 0
        else:
            stale += 1
        if stale >= patience:
            break
    return best_epoch


def train_and_score(
    features: np.ndarray,
    train_rows: np.ndarray,
    seed: int,
    settings: dict[str, Any],
    on_epoch: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train one network; return the scores of every row and of the held-out training rows,
    and the held-out loss per epoch. `on_epoch(epoch, net)` sees every epoch's weights."""
    import torch

    from memae_ts.training.model import MemAENet, NetworkSpec
    from memae_ts.training.train import TrainSettings, train

    fit_rows, val_rows = holdout(train_rows, seed)
    spec = NetworkSpec(
        arch="mlp",
        n_sensors=features.shape[1],
        window=1,
        hidden=list(settings["hidden"]),
        latent=settings["latent"],
        activation=settings["activation"],
        use_memory=settings["use_memory"],
        memory_slots=settings["memory_slots"],
        addressing=settings["addressing"],
        temperature=settings["temperature"],
        shrink_threshold=settings.get("shrink_threshold"),
    )
    torch.manual_seed(seed)
    net = MemAENet(spec)
    history = train(
        net,
        features[fit_rows][:, None, :],
        features[val_rows][:, None, :],
        TrainSettings(
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            entropy_weight=settings.get("entropy_weight", 2e-4),
            patience=settings["patience"],
            seed=seed,
            device="cpu",
            progress=False,
        ),
        on_epoch=on_epoch,
    )
    log.info("  epochs run %d, best %d", len(history.train_loss), history.best_epoch)
    scores = score_all(net, features)
    return scores, scores[val_rows], list(history.val_loss)


def baseline_scores(kind: str, features: np.ndarray, train_rows: np.ndarray, seed: int) -> np.ndarray:
    """A memae_ts.evaluation.baselines baseline fitted on the same training rows (no scaling: the
    features are already in [0, 1]); its score of every row."""
    fit_rows, val_rows = holdout(train_rows, seed)
    model = make_baseline(kind, seed=seed).fit_series(features, np.sort(fit_rows), np.sort(val_rows))
    scores = np.empty(features.shape[0])
    for start in range(0, features.shape[0], 65536):
        scores[start : start + 65536] = model.score(features[start : start + 65536][:, None, :])[0]
    return scores


def thresholds(
    scores: np.ndarray, train_rows: np.ndarray, test_rows: np.ndarray, val_scores: np.ndarray
) -> dict[str, float]:
    both = np.concatenate([scores[train_rows], scores[test_rows]])
    return {
        "dagmm": float(np.percentile(both, ANOMALY_PERCENTILE)),
        "test80": float(np.percentile(scores[test_rows], ANOMALY_PERCENTILE)),
        "memae-ts": float(np.quantile(val_scores, 0.995)),
    }


def summarise(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"{arr.mean():.4f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="kdd_cup.npz (default %(default)s)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--memory-slots", type=int, default=50)
    # 0.05 (the package default) collapses this memory onto one slot (every row reconstructed
    # the same, F1 0.08 in our runs); 0.5 keeps ~7 slots active per row.
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--addressing", default="cosine", choices=["cosine", "dot"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[60, 30, 10])
    parser.add_argument("--latent", type=int, default=3)
    parser.add_argument("--subsample", type=float, default=1.0, help="fraction of rows (smoke tests)")
    parser.add_argument("--json-out", default=None, help="written after every run (partial results survive)")
    parser.add_argument(
        "--per-epoch",
        action="store_true",
        help="no early stopping; F1/ROC-AUC/AP after every epoch and the epoch early stopping would pick",
    )
    parser.add_argument("--baselines", nargs="*", default=[], choices=["pca", "iforest"])
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no training: merge the --json-out files of runs made side by side and print the tables "
        "with 95 %% t-intervals over the runs and the paired differences against the plain AE",
    )
    add_run_options(parser)
    args = parser.parse_args(argv)
    apply_run_options(args)
    if args.from_json:
        print(summary_tables(merge_runs(args.from_json), args.patience))
        return 0

    path = os.path.normpath(args.data)
    if not os.path.exists(path):
        print(f"KDDCUP99 data not found at {path}; skipping (pass --data)", file=sys.stderr)
        return 0
    features, labels = load(path)
    if args.subsample < 1.0:
        keep = np.random.default_rng(12345).random(labels.size) < args.subsample
        features, labels = features[keep], labels[keep]
    base = {
        "hidden": tuple(args.hidden),
        "latent": args.latent,
        "activation": "tanh",
        "memory_slots": args.memory_slots,
        "addressing": args.addressing,
        "temperature": args.temperature,
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
    }
    print(f"KDDCUP99: {labels.size} rows, {features.shape[1]} features, {args.runs} run(s), settings {base}")
    names = [*args.variants, *args.baselines]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {v: {r: [] for r in RULES} for v in names}
    aucs: dict[str, list[tuple[float, float]]] = {v: [] for v in names}
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    curves: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    total_start = time.perf_counter()

    def save(done: int) -> None:
        if not args.json_out:
            return
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "settings": base,
                    "runs": done,
                    "first_seed": args.first_seed,
                    "wall_seconds": time.perf_counter() - total_start,
                    "cpu_seconds": cpu,
                    "results": results,
                    "auc": aucs,
                    "per_epoch": curves,
                },
                handle,
                indent=1,
            )

    for run in range(args.runs):
        seed = args.first_seed + run
        train_rows, test_rows = split(labels, seed)
        for name in names:
            start, cpu_start = time.perf_counter(), time.process_time()
            curve: list[dict[str, float]] = []
            if name in args.baselines:
                scores = baseline_scores(name, features, train_rows, seed)
                val_scores = scores[holdout(train_rows, seed)[1]]
            else:
                settings = {**base, **VARIANTS[name]}
                hook = None
                if args.per_epoch:
                    settings["patience"] = settings["epochs"]  # the whole curve; early stopping read off it

                    hook = epoch_hook(curve, features, labels, train_rows, test_rows)

                scores, val_scores, val_loss = train_and_score(features, train_rows, seed, settings, hook)
                if args.per_epoch:
                    stop = early_stop_epoch(val_loss, args.patience)
                    curves[name].append(
                        {"seed": seed, "curve": curve, "val_loss": val_loss, "early_stop_epoch": stop}
                    )
            seconds[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - cpu_start
            y, s = labels[test_rows], scores[test_rows]
            for rule, value in thresholds(scores, train_rows, test_rows, val_scores).items():
                results[name][rule].append(evaluate(y, s, value))
            aucs[name].append((roc_auc(y, s), average_precision(y, s)))
            m = results[name]["dagmm"][-1]
            extra = ""
            if curve:
                stop = curves[name][-1]["early_stop_epoch"]
                extra = (
                    f" | early stop (patience {args.patience}) epoch {stop}: F1 {curve[stop - 1]['f1']:.4f}"
                )
            print(
                f"run {run + 1}/{args.runs} seed {seed} {name:>15}: P {m['precision']:.4f} "
                f"R {m['recall']:.4f} F1 {m['f1']:.4f} ROC-AUC {aucs[name][-1][0]:.4f} "
                f"[{time.perf_counter() - start:.0f} s]{extra}",
                flush=True,
            )
        save(run + 1)
    total = time.perf_counter() - total_start

    print(f"\nmean ± std over {args.runs} run(s); wall time {total:.0f} s")
    print("| Method | threshold rule | Precision | Recall | F1 | ROC-AUC | PR-AUC | time/run (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        for rule in RULES:
            rows = results[name][rule]
            roc = summarise([a for a, _ in aucs[name]]) if rule == "dagmm" else ""
            pr = summarise([b for _, b in aucs[name]]) if rule == "dagmm" else ""
            print(
                f"| {name} | {rule} | {summarise([m['precision'] for m in rows])} | "
                f"{summarise([m['recall'] for m in rows])} | {summarise([m['f1'] for m in rows])} | "
                f"{roc} | {pr} | {seconds[name] / args.runs:.0f} s ({cpu[name] / args.runs:.0f} s) |"
            )
    for name, p, r, f1 in PUBLISHED:
        p_s = f"{p:.4f}" if p is not None else ""
        r_s = f"{r:.4f}" if r is not None else ""
        print(f"| {name} (published) | dagmm | {p_s} | {r_s} | {f1:.4f} | | | |")
    if args.per_epoch:
        print(per_epoch_table(curves, args.patience))
    save(args.runs)
    return 0


def interval(values: Sequence[float]) -> str:
    """Mean [95 % interval over the runs]: Student's t on the run-to-run spread (each run is its
    own split and network, so runs are the independent units; rows of one test set are not)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return f"{arr.mean():.4f}"
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size)
    return f"{arr.mean():.4f} [{arr.mean() - half:.4f}, {arr.mean() + half:.4f}]"


def merge_runs(paths: Sequence[str]) -> dict[str, Any]:
    """The runs of several --json-out files (e.g. seeds run side by side) as one result."""
    merged: dict[str, Any] = {
        "results": {},
        "auc": {},
        "per_epoch": {},
        "cpu_seconds": {},
        "wall": [],
        "seeds": [],
    }
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            part = json.load(handle)
        merged["settings"] = part["settings"]
        merged["wall"].append(part["wall_seconds"])
        merged["seeds"] += list(range(part["first_seed"], part["first_seed"] + part["runs"]))
        for name, rules in part["results"].items():
            for rule, rows in rules.items():
                merged["results"].setdefault(name, {}).setdefault(rule, []).extend(rows[: part["runs"]])
            merged["auc"].setdefault(name, []).extend(part["auc"][name][: part["runs"]])
            merged["cpu_seconds"][name] = merged["cpu_seconds"].get(name, 0.0) + part["cpu_seconds"][name]
        for name, runs in part.get("per_epoch", {}).items():
            merged["per_epoch"].setdefault(name, []).extend(runs)
    return merged


def summary_tables(merged: dict[str, Any], patience: int = 5) -> str:
    """Seed-level table (dagmm rule, ROC-AUC, AP) with 95 % t-intervals over the runs, the paired
    differences of each model against the plain AE on the same splits, and the per-epoch table."""
    names = list(merged["results"])
    n = len(merged["seeds"])
    lines = [
        f"{n} runs (seeds {merged['seeds']}), mean [95 % t-interval over runs]",
        "| Method | F1 (dagmm) | ROC-AUC | AP | F1 (memae-ts rule) | CPU s / run |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        f1 = [m["f1"] for m in merged["results"][name]["dagmm"]]
        own = [m["f1"] for m in merged["results"][name]["memae-ts"]]
        roc = [a for a, _ in merged["auc"][name]]
        ap = [b for _, b in merged["auc"][name]]
        cpu = merged["cpu_seconds"][name] / max(1, len(f1))
        lines.append(
            f"| {name} | {interval(f1)} | {interval(roc)} | {interval(ap)} | {interval(own)} | {cpu:.0f} |"
        )
    if "ae" in names:
        lines += ["", "| Paired difference (same splits) | F1 (dagmm) | ROC-AUC | AP | runs with A above |",
                  "|---|---|---|---|---|"]  # fmt: skip
        base_f1 = np.array([m["f1"] for m in merged["results"]["ae"]["dagmm"]])
        base_auc = np.array(merged["auc"]["ae"])
        for name in [v for v in names if v != "ae"]:
            f1 = np.array([m["f1"] for m in merged["results"][name]["dagmm"]]) - base_f1
            auc = np.array(merged["auc"][name]) - base_auc
            above = int(np.sum(f1 > 0))
            lines.append(
                f"| {name} − ae | {interval(f1)} | {interval(auc[:, 0])} | {interval(auc[:, 1])} | "
                f"{above} of {f1.size} |"
            )
    if merged["per_epoch"]:
        lines += ["", per_epoch_table(merged["per_epoch"], patience)]
    return "\n".join(lines)


def per_epoch_table(curves: dict[str, list[dict[str, Any]]], patience: int) -> str:
    """F1 (dagmm rule) / ROC-AUC / AP per epoch, mean and range over the runs."""
    lines = [
        "| variant | epoch | F1 mean [min, max] | ROC-AUC mean | AP mean |",
        "|---|---|---|---|---|",
    ]
    for name, runs in curves.items():
        if not runs:
            continue
        n_epochs = min(len(r["curve"]) for r in runs)
        for e in range(n_epochs):
            f1 = [r["curve"][e]["f1"] for r in runs]
            roc = np.mean([r["curve"][e]["roc_auc"] for r in runs])
            ap = np.mean([r["curve"][e]["average_precision"] for r in runs])
            lines.append(
                f"| {name} | {e + 1} | {np.mean(f1):.4f} [{min(f1):.4f}, {max(f1):.4f}] | "
                f"{roc:.4f} | {ap:.4f} |"
            )
        chosen = [r["curve"][r["early_stop_epoch"] - 1]["f1"] for r in runs]
        epochs = [r["early_stop_epoch"] for r in runs]
        lines.append(
            f"| {name} | early stopping (patience {patience}): epochs {epochs} | {np.mean(chosen):.4f} "
            f"[{min(chosen):.4f}, {max(chosen):.4f}] | | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
