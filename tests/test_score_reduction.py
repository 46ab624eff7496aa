"""The bundle's score reduction (`mean`, `max`, `last_rows`) is one setting applied the same way
by every engine (C++ runtime on every ISA, torch, numpy, ONNX), by calibration, and by every
scoring path (API, CLI `score`, the edge daemon's processor).

What each reduction means (memae_ts.detection.score_reduction): contributions are per-sensor
squared errors averaged over the rows (`mean`, `max`) or weighted towards the newest rows
(`last_rows`); the score is their mean, or their max for `max`, so the top sensor is always the
sensor that carries most of the score.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts import _runtime
from memae_ts.detection.score_reduction import ScoreReduction, last_rows_weights
from memae_ts.engines.bundle import load_bundle, make_bundle
from memae_ts.engines.engine_numpy import NumpyEngine
from memae_ts.engines.runtime import Runtime
from memae_ts.errors import BundleError, DataError

RTOL = 1e-4
SCORINGS: dict[str, dict[str, Any] | None] = {
    "mean": None,
    "max": {"reduction": "max"},
    "last_rows": {"reduction": "last_rows", "half_life_rows": 5.0},
}


def with_scoring(config: dict[str, Any], scoring: dict[str, Any] | None) -> dict[str, Any]:
    if scoring is None:
        return dict(config)
    return {**config, "format_version": 3, "scoring": scoring}


@pytest.fixture(scope="module", params=["conv", "mlp"])
def base(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if request.param == "conv":
        return random_bundle("conv", seed=5, n_sensors=5, window=24, channels=(8, 12), latent=6, slots=40)
    return random_bundle("mlp", seed=5, n_sensors=4, window=11, hidden=(20, 12), latent=5, slots=30)


@pytest.mark.parametrize("kind", sorted(SCORINGS))
def test_every_engine_and_isa_applies_the_same_reduction(base, kind: str, tmp_path: Path) -> None:
    config, weights = base
    path = write_bundle(tmp_path / "model", with_scoring(config, SCORINGS[kind]), weights)
    bundle = load_bundle(path)
    assert bundle.scoring.kind == kind
    numpy_engine = NumpyEngine(bundle)
    x = random_windows(config, 37, seed=3)
    want_scores, want_contributions = numpy_engine.score(x)

    # the numpy reference is the formula, from its own reconstruction
    scaled = numpy_engine.scale(x)
    errors = (scaled - numpy_engine.reconstruct(x)) ** 2
    rows = np.full(config["window"], 1.0 / config["window"])
    if kind == "last_rows":
        rows = last_rows_weights(config["window"], 5.0)
        assert rows[-1] > rows[0] * 3  # the newest rows weigh more
    contributions = np.einsum("bws,w->bs", errors, rows)
    np.testing.assert_allclose(want_contributions, contributions, rtol=1e-12)
    np.testing.assert_allclose(
        want_scores, contributions.max(axis=1) if kind == "max" else contributions.mean(axis=1), rtol=1e-12
    )

    runtime = Runtime.load(path)
    assert runtime.reduction == kind
    for isa in _runtime.available_isas():
        runtime._model.set_isa(isa)
        for batch in (1, 37):
            scores, contribs = runtime.score(x[:batch])
            np.testing.assert_allclose(scores, want_scores[:batch], rtol=RTOL, err_msg=f"{kind} {isa}")
            np.testing.assert_allclose(contribs, want_contributions[:batch], rtol=RTOL, err_msg=isa)
        # the daemon's one-pass path gives the same score and contributions
        analysed = runtime.analyse(x)
        np.testing.assert_allclose(analysed[0], want_scores, rtol=RTOL)
        np.testing.assert_allclose(analysed[1], want_contributions, rtol=RTOL)
    np.testing.assert_allclose(numpy_engine.analyse(x)[0], want_scores, rtol=1e-12)

    # (the torch engine needs a trainer's bundle: test_cli_api_and_daemon_processor_score_the_same)
    pytest.importorskip("onnxruntime")
    from memae_ts.engines.export_onnx import OnnxEngine

    scores, contribs = OnnxEngine(bundle).score(x)
    np.testing.assert_allclose(scores, want_scores, rtol=RTOL)
    np.testing.assert_allclose(contribs, want_contributions, rtol=RTOL)


def test_a_mean_bundle_is_written_and_scored_exactly_as_before(base, tmp_path: Path) -> None:
    """`mean` adds nothing to the bundle (format 2, same integrity id) and the runtime's scores
    are bit for bit those of a bundle that says "mean" explicitly."""
    config, weights = base
    plain = make_bundle(config, weights)
    assert "scoring" not in plain.config and plain.config["format_version"] == 2
    assert make_bundle({**config, "scoring": None}, weights).model_version == plain.model_version
    explicit = make_bundle({**config, "scoring": {"reduction": "mean"}}, weights)
    x = random_windows(config, 19, seed=8)
    a, b = Runtime.from_bundle(plain).score(x), Runtime.from_bundle(explicit).score(x)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # a non-mean reduction makes a format-3 bundle, which an older memae-ts refuses
    assert make_bundle({**config, "scoring": {"reduction": "max"}}, weights).config["format_version"] == 3


@pytest.mark.parametrize(
    ("scoring", "version", "message"),
    [
        ({"reduction": "median"}, 3, "'scoring.reduction' must be one of mean, max, last_rows"),
        ({"reduction": "max"}, 2, "'scoring.reduction' 'max' needs format_version 3"),
        ({"reduction": "last_rows"}, 3, "'half_life_rows' must be a number"),
        ({"reduction": "last_rows", "half_life_rows": -1}, 3, "'half_life_rows' must be a number"),
        ("max", 3, "'scoring' must be an object"),
    ],
)
def test_a_bad_scoring_section_is_refused_by_both_loaders(
    base, tmp_path: Path, scoring, version, message
) -> None:
    config, weights = base
    path = write_bundle(tmp_path / "bad", {**config, "format_version": version, "scoring": scoring}, weights)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    with pytest.raises(BundleError, match="scoring"):
        Runtime.load(path)


def test_estimator_parameters_are_checked_before_training() -> None:
    from memae_ts.estimator import MemAE

    assert MemAE().get_params()["score_reduction"] == "mean"
    model = MemAE(window=8, epochs=1).set_params(score_reduction="last_rows")
    assert model._score_reduction() == ScoreReduction("last_rows", 2.0)  # a quarter of the window
    frame = pd.DataFrame({"a": np.arange(200.0), "b": np.sin(np.arange(200.0))})
    with pytest.raises(DataError, match="score_reduction must be one of mean, max, last_rows"):
        MemAE(window=8, epochs=1, score_reduction="median").fit(frame)
    with pytest.raises(DataError, match="score_half_life applies to score_reduction 'last_rows' only"):
        MemAE(window=8, epochs=1, score_half_life=3.0).fit(frame)
    with pytest.raises(DataError, match="score_half_life must be a number of rows"):
        MemAE(window=8, epochs=1, score_reduction="last_rows", score_half_life=0.0).fit(frame)


# ------------------------------------------------------------------ fitted: every scoring path


def messy_plant(seed: int) -> pd.DataFrame:
    """Two machines with their own levels, a gap in the clock, missing readings and a stuck
    sensor stretch: what a historian export looks like."""
    rng = np.random.default_rng(seed)
    parts = []
    for asset, level in (("pump-1", 50.0), ("pump-2", 80.0)):
        t = pd.date_range("2026-11-01", periods=700, freq="1min", tz="UTC")
        t = t.delete(slice(300, 340))  # the historian was down
        phase = np.arange(len(t)) / 40.0
        frame = pd.DataFrame(
            {
                "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "asset": asset,
                "flow": level + 5 * np.sin(phase) + rng.normal(0, 0.3, len(t)),
                "pressure": 2 + 0.1 * np.cos(phase) + rng.normal(0, 0.01, len(t)),
                "temp": 40 + 0.5 * np.sin(phase / 3) + rng.normal(0, 0.05, len(t)),
            }
        )
        frame.loc[rng.random(len(frame)) < 0.01, "pressure"] = np.nan
        frame.loc[500:520, "temp"] = frame.loc[500, "temp"]
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


FIT = {"window": 12, "channels": (6,), "latent": 4, "memory_slots": 10, "epochs": 2, "seed": 1}


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reduction-plant")
    history, live = root / "history.csv", root / "live.csv"
    messy_plant(1).to_csv(history, index=False)
    frame = messy_plant(2)
    frame.loc[600:640, "flow"] += 15.0  # a fault on pump-1
    frame.to_csv(live, index=False)
    return history, live


@pytest.fixture(scope="module", params=sorted(SCORINGS))
def fitted(
    request: pytest.FixtureRequest, plant, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A model fitted by the CLI with `--score-reduction KIND`."""
    pytest.importorskip("torch")
    kind = request.param
    out = tmp_path_factory.mktemp(f"fit-{kind}") / "model"
    args = [
        sys.executable, "-m", "memae_ts.cli", "fit", str(plant[0]), "-o", str(out), "--asset-column", "asset",
        "--window", "12", "--channels", "6", "--latent", "4", "--memory-slots", "10", "--epochs", "2",
        "--seed", "1", "-q", "--score-reduction", kind,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return kind, out


def test_fit_stores_the_reduction_and_info_shows_it(fitted) -> None:
    kind, path = fitted
    bundle = load_bundle(path)
    assert bundle.scoring.kind == kind
    assert bundle.config["training"]["params"]["score_reduction"] == kind
    if kind == "last_rows":
        assert bundle.scoring.half_life_rows == 3.0  # a quarter of the 12-row window
    info = subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", "info", str(path)], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert f"  score          {kind}" in info.stdout


def test_the_threshold_is_calibrated_on_the_same_reduction(fitted, plant) -> None:
    """The training data's windows, scored with the bundle's reduction, sit below the threshold
    about as often as calibration intended; a threshold from `mean` applied to `max` scores
    (which are larger by up to the number of sensors) would alarm on most normal windows."""
    from memae_ts.estimator import load

    kind, path = fitted
    model = load(path, engine="runtime")
    scores = model.score_samples(plant[0])
    normal = scores[np.isfinite(scores)] / model.threshold_
    assert np.mean(normal >= 1.0) < 0.05, (kind, np.mean(normal >= 1.0))
    assert np.quantile(normal, 0.5) > 0.05  # and not far above it either


def test_cli_api_and_daemon_processor_score_the_same(fitted, plant, tmp_path: Path) -> None:
    from memae_ts.connectors.metrics import EdgeMetrics
    from memae_ts.connectors.processor import StreamProcessor
    from memae_ts.edge.model import load_served_model
    from memae_ts.edge.replay import read_messages
    from prometheus_client import CollectorRegistry
    from test_edge_resampling import FakeSink, FakeSource, Msg

    from memae_ts.estimator import load

    _kind, path = fitted
    live = plant[1]
    out = tmp_path / "scores.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memae_ts.cli",
            "score",
            str(path),
            str(live),
            "-o",
            str(out),
            "--engine",
            "runtime",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if r["score"]]
    cli = {(r["asset"], r["timestamp"]): float(r["score"]) for r in rows}
    cli_top = {(r["asset"], r["timestamp"]): r["top_sensors"].split(":")[0] for r in rows}
    assert len(cli) > 1000

    by_engine = {}
    for engine in ("runtime", "numpy", "torch"):
        model = load(path, engine=engine)
        frame, result = model.score_rows(live)
        ok = np.isfinite(result.score)
        assets = np.asarray(frame.assets)[ok] if frame.assets is not None else None
        stamps = frame.timestamps[ok].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert assets is not None
        by_engine[engine] = dict(zip(zip(assets, stamps, strict=True), result.score[ok], strict=True))
    api = by_engine["runtime"]
    assert sorted(api) == sorted(cli)
    keys = sorted(api)
    np.testing.assert_allclose([cli[k] for k in keys], [api[k] for k in keys], rtol=1e-5)
    for engine in ("numpy", "torch"):
        np.testing.assert_allclose([by_engine[engine][k] for k in keys], [api[k] for k in keys], rtol=1e-4)

    served = load_served_model(path, engine="runtime")
    source, sink = FakeSource(), FakeSink()
    proc = StreamProcessor(lambda *callbacks: source, sink, served, EdgeMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    msgs = [
        Msg(0, i, k, v)
        for i, (k, v) in enumerate(read_messages(live, sensors=served.sensors, asset_column="asset"))
    ]
    source.batches = [msgs[i : i + 97] for i in range(0, len(msgs), 97)]
    for _ in range(len(source.batches)):
        proc.step()
    assert not sink.dead
    daemon = {(r["asset"], r["ts"]): r["score"] for r in sink.published}
    assert sorted(daemon) == keys
    np.testing.assert_allclose([daemon[k] for k in keys], [api[k] for k in keys], rtol=1e-5)
    # the top sensor comes from the same contributions as the score (for `max` the top sensor's
    # contribution is the score), so the daemon and the CLI name the same one
    daemon_top = {(r["asset"], r["ts"]): r["top_sensors"][0]["sensor"] for r in sink.published}
    same = np.mean([daemon_top[k] == cli_top[k] for k in keys])
    assert same > 0.999, same


def test_upgrade_leaves_a_format_3_bundle_alone(
    base, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memae_ts.cli import main

    config, weights = base
    path = write_bundle(tmp_path / "max", with_scoring(config, SCORINGS["max"]), weights)
    before = (path / "config.json").read_bytes()
    assert main(["upgrade", str(path)]) == 0
    assert "already format 3; nothing to do" in capsys.readouterr().err
    assert (path / "config.json").read_bytes() == before
