"""Operating modes from the memory and the novel-mode score (memae_ts.detection.modes).

The grouping rule on planted structure and on none; the bundle's modes on the demo pump (three
speeds); novelty, addressing and modes equal in the C++ runtime, numpy and torch; `memae-ts
score` columns on a messy fleet file; the novelty threshold on normal data; the combine rule;
`memae-ts info` for bundles with and without modes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runtime_bundles import random_bundle, random_windows, write_bundle

from memae_ts.cli import main
from memae_ts.detection.modes import MAX_MODES, NO_MODE, Modes, assign, fit_modes
from memae_ts.engines.bundle import load_bundle, make_bundle, save_bundle
from memae_ts.engines.engine_numpy import NumpyEngine
from memae_ts.engines.runtime import Runtime
from memae_ts.io.data import DataWarning
from memae_ts.io.demo_data import generate_fleet


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the grouping rule ------------------------------------------------------------------------


def planted_profiles(rng: np.random.Generator, per_mode: list[int], slots: int = 30) -> np.ndarray:
    """Windows' addressing profiles: mode m uses slots 10m..10m+9, two or three at a time."""
    rows = []
    for mode, count in enumerate(per_mode):
        for _ in range(count):
            w = np.zeros(slots)
            used = rng.choice(np.arange(10 * mode, 10 * mode + 10), size=rng.integers(2, 4), replace=False)
            w[used] = rng.dirichlet(np.ones(len(used)))
            rows.append(w)
    return np.array(rows)


def test_fit_modes_finds_planted_operating_states_and_maps_every_slot() -> None:
    rng = np.random.default_rng(0)
    profiles = planted_profiles(rng, [300, 150, 50])
    memory = rng.normal(size=(30, 4))
    fit = fit_modes(profiles, memory)
    assert fit.n_modes == 3
    # Each planted block of slots is one mode, whatever the k-means numbering.
    blocks = [set(fit.slot_mode[10 * m : 10 * m + 10].tolist()) for m in range(3)]
    assert all(len(b) == 1 for b in blocks) and len(set.union(*blocks)) == 3
    counts = np.bincount(fit.window_modes, minlength=3)
    assert sorted(counts.tolist()) == [50, 150, 300]
    assert fit.silhouettes[3] == max(v for v in fit.silhouettes.values() if not np.isnan(v))


def test_fit_modes_says_one_mode_when_windows_share_their_slots() -> None:
    rng = np.random.default_rng(1)
    profiles = rng.dirichlet(np.ones(12), size=400)  # every window spreads over the same slots
    fit = fit_modes(profiles, rng.normal(size=(12, 4)))
    assert fit.n_modes == 1
    assert set(fit.window_modes.tolist()) == {0}
    assert len(fit.silhouettes) == MAX_MODES - 1


def test_a_window_whose_addressing_is_all_zero_has_no_mode() -> None:
    slot_mode = np.array([0, 0, 1, 1])
    attention = np.array([[0.7, 0.1, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.5, 0.4]])
    assert assign(attention, slot_mode, 2).tolist() == [0, NO_MODE, 1]


# -- the bundle's modes -----------------------------------------------------------------------


def test_the_demo_pump_speeds_come_out_as_modes(tiny_model_dir: Path) -> None:
    """The demo pump runs at several speeds; the modes separate them with no label."""
    config = load_bundle(tiny_model_dir).config
    modes = config["modes"]
    slots = config["network"]["memory"]["slots"]
    assert len(modes["slot_mode"]) == slots and set(modes["slot_mode"]) == set(range(len(modes["modes"])))
    assert 2 <= len(modes["modes"]) <= MAX_MODES
    assert modes["source"] == "training windows"
    assert sum(m["share"] for m in modes["modes"]) + modes["unassigned_windows"] / modes["n_windows"] == (
        pytest.approx(1.0)
    )
    speeds = sorted(m["median"]["motor_speed_rpm"] for m in modes["modes"])
    assert speeds[-1] - speeds[0] > 200  # rpm: different operating points, not noise
    threshold = modes["novelty"]["threshold"]
    assert threshold["value"] > 0 and threshold["margin"] == 1.5


# -- engine parity ----------------------------------------------------------------------------

CASES = {
    "conv": {"kind": "conv"},
    "conv-dot": {"kind": "conv", "addressing": "dot", "temperature": 0.3, "kernel": 3},
    "mlp": {"kind": "mlp"},
    "mlp-odd": {"kind": "mlp", "n_sensors": 3, "window": 11, "hidden": (31, 17), "latent": 5},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_runtime_analyse_matches_the_numpy_reference(case: str, tmp_path: Path) -> None:
    config, weights = random_bundle(seed=5, **CASES[case])
    path = write_bundle(tmp_path / "m", config, weights)
    runtime, reference = Runtime.load(path), NumpyEngine(load_bundle(path))
    for batch in (1, 7, 70):
        x = random_windows(config, batch, seed=batch)
        got, want = runtime.analyse(x, True), reference.analyse(x, True)
        assert got[3].shape == want[3].shape == (batch, got[2].shape[1])
        for name, i in (("scores", 0), ("attention", 2), ("novelty", 3), ("encodings", 4)):
            what = f"{case} {name} {batch}"
            np.testing.assert_allclose(got[i], want[i], rtol=1e-4, atol=2e-6, err_msg=what)
        assert np.all((want[3] >= -1e-9) & (want[3] <= 2 + 1e-9))  # 1 - cos lies in [0, 2]


def test_novelty_and_modes_agree_in_runtime_numpy_and_torch(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    pytest.importorskip("torch")
    from memae_ts.engines.engine_torch import TorchEngine
    from memae_ts.io.windows import gather

    bundle = load_bundle(tiny_model_dir)
    modes = Modes.of(bundle)
    assert modes is not None
    live = pd.read_csv(plant_csvs[1])
    values = live[bundle.sensors].to_numpy(np.float64)
    x = gather(values, np.arange(bundle.window - 1, len(values), 3), bundle.window).astype(np.float32)
    engines = (Runtime.from_bundle(bundle), NumpyEngine(bundle), TorchEngine(bundle))
    results = [modes.analyse(e, x) for e in engines]
    for other in results[1:]:
        np.testing.assert_allclose(results[0].novelty, other.novelty, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(results[0].scores, other.scores, rtol=1e-4)
        assert np.mean(results[0].mode == other.mode) > 0.99  # a tie within float rounding may differ


# -- scoring ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three pumps with outages and empty cells, five-minute sampling (with faults)."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.csv"
    generate_fleet(assets=3, days=2, period_seconds=300, seed=4).to_csv(path, index=False)
    return path


def test_score_writes_mode_and_novelty_for_a_messy_fleet_file(
    tiny_model_dir: Path, fleet_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = {}
    for engine in ("runtime", "numpy"):
        out = tmp_path / f"{engine}.csv"
        code, _, err = cli(
            "score", str(tiny_model_dir), str(fleet_csv), "--asset-column", "asset", "--engine", engine,
            "-o", str(out), capsys=capsys,
        )  # fmt: skip
        assert code == 0, err
        frames[engine] = pd.read_csv(out)
    frame = frames["runtime"]
    assert {"mode", "novelty_score"} <= set(frame.columns)
    scored = frame["score"].notna()
    assert (frame.loc[~scored, "mode"].isna() & frame.loc[~scored, "novelty_score"].isna()).all()  # warm-up
    assert frame.loc[scored, "novelty_score"].notna().all()
    n_modes = len(load_bundle(tiny_model_dir).config["modes"]["modes"])
    assert set(frame.loc[scored, "mode"].dropna().astype(int)) <= set(range(n_modes))
    assert frame.loc[scored, "mode"].notna().mean() > 0.99
    assert frame.groupby("asset")["mode"].nunique().min() >= 1
    np.testing.assert_allclose(frame["novelty_score"], frames["numpy"]["novelty_score"], rtol=1e-4, atol=1e-7)
    assert (frame["mode"].fillna(-1) == frames["numpy"]["mode"].fillna(-1)).mean() > 0.99


def test_novelty_threshold_is_calibrated_on_normal_data(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path]
) -> None:
    """1.0 is the novelty score's own alarm line: normal operation seldom reaches it. (Whether
    it separates faults is measured, not asserted: bench/skab_modes.py, docs/benchmarks.md.)"""
    from memae_ts.estimator import load

    model = load(tiny_model_dir)
    _, result = model.score_rows(plant_csvs[0])
    assert result.novelty is not None and result.mode is not None
    normal = result.novelty[np.isfinite(result.novelty)]
    assert normal.size > 1000
    assert np.mean(normal >= 1.0) < 0.02  # held-out normal windows, quantile 0.995, margin 1.5
    assert np.median(normal) > 0.05  # a live signal, not a constant


def test_combine_max_alarms_when_either_score_reaches_its_threshold(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    from memae_ts.estimator import load

    bundle = load_bundle(tiny_model_dir)
    config = json.loads(json.dumps(bundle.config))
    # A lower novelty threshold makes the second signal decide some windows on its own.
    config["modes"]["novelty"]["threshold"]["value"] /= 3
    config["modes"]["combine"] = "max"
    path = save_bundle(tmp_path / "max", make_bundle(config, bundle.weights)).path
    _, result = load(path).score_rows(plant_csvs[1])
    assert result.novelty is not None and result.combine == "max"
    level = np.nan_to_num(np.fmax(result.normalised, result.novelty), nan=0.0)
    np.testing.assert_array_equal(result.is_anomaly, level >= 1.0)
    by_novelty_only = (np.nan_to_num(result.normalised) < 1.0) & (np.nan_to_num(result.novelty) >= 1.0)
    assert by_novelty_only.any()
    config["modes"]["combine"] = "reconstruction"
    path = save_bundle(tmp_path / "rec", make_bundle(config, bundle.weights)).path
    _, plain = load(path).score_rows(plant_csvs[1])
    np.testing.assert_array_equal(plain.is_anomaly, np.nan_to_num(plain.normalised) >= 1.0)


def test_fit_refuses_an_unknown_combine_rule(plant_csvs: tuple[Path, Path]) -> None:
    pytest.importorskip("torch")
    from memae_ts.errors import DataError
    from memae_ts.estimator import MemAE

    with pytest.raises(DataError, match="combine must be one of"):
        MemAE(combine="either").fit(plant_csvs[0])


# -- info -------------------------------------------------------------------------------------


def test_info_lists_modes_with_shares_and_typical_values(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli("info", str(tiny_model_dir), capsys=capsys)
    assert code == 0
    modes = load_bundle(tiny_model_dir).config["modes"]["modes"]
    assert f"{len(modes)} operating mode(s)" in out
    assert "share of windows" in out and "motor_speed_rpm" in out
    for m in modes:
        assert f"{m['share']:.1%}" in out
        assert f"{m['median']['motor_speed_rpm']:.4g}" in out
    assert "novelty" in out and "alarms on: reconstruction only" in out

    # A bundle from before modes: info says so, and score writes no mode columns.
    bundle = load_bundle(tiny_model_dir)
    config = {k: v for k, v in bundle.config.items() if k != "modes"}
    old = save_bundle(tmp_path / "old", make_bundle(config, bundle.weights)).path
    code, out, _ = cli("info", old, capsys=capsys)
    assert code == 0 and "none in this bundle" in out
