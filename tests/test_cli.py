"""The command line end to end on small CSVs, including its error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.cli import COMMAND_MODULES, build_parser, main

CORE_COMMANDS = ["fit", "score", "evaluate", "plot", "info", "demo-data"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(CORE_COMMANDS) <= set(commands)
    assert len(commands) >= len(COMMAND_MODULES) - 1
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out, f"'memae-ts {name} --help' has no examples"


def test_fit_score_evaluate_plot_info(tmp_path: Path, plant_csvs: tuple[Path, Path]) -> None:
    history, live = plant_csvs
    model = tmp_path / "model"
    fit = run_cli(
        "fit",
        str(history),
        "-o",
        str(model),
        "--window",
        "16",
        "--channels",
        "8",
        "16",
        "--latent",
        "8",
        "--memory-slots",
        "20",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "3e-3",
        "--seed",
        "1",
        "--quiet",
    )
    assert fit.returncode == 0, fit.stderr
    assert "model written to" in fit.stdout
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()

    scores_path = tmp_path / "scores.csv"
    score = run_cli("score", str(model), str(live), "-o", str(scores_path), "--engine", "numpy")
    assert score.returncode == 0, score.stderr
    scores = pd.read_csv(scores_path)
    assert list(scores.columns)[:7] == [
        "timestamp", "score", "normalised_score", "is_anomaly", "alarm", "tail_probability", "top_sensors",
    ]  # fmt: skip
    assert set(scores["alarm"].unique()) <= {0, 1}
    live_frame = pd.read_csv(live)
    assert len(scores) == len(live_frame)
    assert scores["score"].isna().sum() == 15  # window 16: the first 15 rows are warm-up
    np.testing.assert_allclose(
        scores["normalised_score"],
        scores["score"] / json.loads((model / "config.json").read_text())["threshold"]["value"],
        rtol=1e-5,
    )
    assert ((scores["normalised_score"] >= 1) == (scores["is_anomaly"] == 1)).all()
    top = scores["top_sensors"].dropna().iloc[0].split(";")
    assert len(top) == 3 and all(":" in item for item in top)

    evaluation = run_cli(
        "evaluate", str(model), str(live), "--label-column", "anomaly", "--json", "--engine", "numpy"
    )
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    for key in ("precision", "recall", "f1", "far", "mar", "roc_auc", "pr_auc"):
        assert key in metrics
    assert metrics["roc_auc"] > 0.55  # even a 3-epoch model ranks the injected faults higher

    png = tmp_path / "plot.png"
    plot = run_cli(
        "plot", str(model), str(live), "--label-column", "anomaly", "-o", str(png), "--engine", "numpy"
    )
    assert plot.returncode == 0, plot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = run_cli("info", str(model))
    assert info.returncode == 0
    assert "memory         20 slots × 8, cosine addressing" in info.stdout
    assert "motor_speed_rpm" in info.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{tmp}/missing.csv"], "file not found"),
        (["fit", "{tmp}/empty.csv"], "file is empty"),
        (["fit", "{tmp}/short.csv", "--window", "32"], "no complete window of 32 rows"),
        (["fit", "{tmp}/bad.csv"], "read both day-first and month-first"),
        (["fit", "{tmp}/bad.csv", "--dayfirst", "--tz", "Mars/Base"], "--tz: unknown time zone 'Mars/Base'"),
        (["score", "{tmp}/nomodel", "{tmp}/short.csv"], "model bundle not found"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.csv").write_text("")
    rows = [f"2026-01-01T00:{i:02d}:00Z,{i},{i * 2}" for i in range(10)]
    (tmp_path / "short.csv").write_text("timestamp,a,b\n" + "\n".join(rows) + "\n")
    bad = [f"01.02.2026 00:{i:02d},{i},{i * 2}" for i in range(10)]
    (tmp_path / "bad.csv").write_text("timestamp,a,b\n" + "\n".join(bad) + "\n")
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_data_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        assert main(["demo-data", str(tmp_path / name), "--days", "1", "--seed", "5"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    frame = pd.read_csv(tmp_path / "a.csv")
    assert len(frame) == 1440 and frame["anomaly"].sum() > 0
    assert frame.drop(columns=["timestamp", "anomaly"]).shape[1] == 8


def test_fit_flags_default_to_the_api_defaults() -> None:
    """`memae-ts fit data.csv` must train exactly what `MemAE().fit(...)` trains."""
    from memae_ts.cli.commands.fit import model_from_args
    from memae_ts.estimator import MemAE

    args = build_parser().parse_args(["fit", "data.csv"])
    from_cli = model_from_args(args).get_params()
    from_api = MemAE().get_params()
    differing = {k: (from_cli[k], v) for k, v in from_api.items() if k != "verbose" and from_cli[k] != v}
    assert differing == {}


@pytest.mark.filterwarnings("ignore:.*rows are not in time order")
def test_evaluate_adds_the_changepoint_score_with_the_column_following_its_rows(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memae_ts.estimator import load
    from memae_ts.evaluation.nab import events_of, nab

    frame = pd.read_csv(plant_csvs[1])
    # A changepoint where each fault starts and ends.
    frame["changepoint"] = frame["anomaly"].diff().fillna(frame["anomaly"]).ne(0).astype(int)
    assert frame["changepoint"].sum() >= 2
    shuffled = tmp_path / "shuffled.csv"  # the column must follow its rows when they are sorted
    frame.sample(frac=1.0, random_state=0).to_csv(shuffled, index=False)
    args = ["evaluate", str(tiny_model_dir), str(shuffled), "--changepoint-column", "changepoint"]
    assert main([*args, "--nab-window", "3600", "--json", "--engine", "numpy"]) == 0
    got = json.loads(capsys.readouterr().out)

    times = pd.to_datetime(frame["timestamp"])
    seconds = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    alarms = load(tiny_model_dir, engine="numpy").alarms(plant_csvs[1]) == 1  # under the alarm rule
    expected = nab([events_of(seconds, frame["changepoint"].to_numpy(), alarms, 3600.0)])
    for name, value in expected.items():
        assert got[f"nab_{name}"] == pytest.approx(value), name
    assert got["nab_standard"] != got["nab_low_fn"]  # the profiles weigh misses differently
    assert got["f1"] == pytest.approx(json.loads(_evaluate_json(tiny_model_dir, shuffled, capsys))["f1"])

    assert main([*args[:-1], "no_such_column", "--engine", "numpy"]) == 2
    assert "label column 'no_such_column' not found" in capsys.readouterr().err


def _evaluate_json(model: Path, csv: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["evaluate", str(model), str(csv), "--json", "--engine", "numpy"]) == 0
    return capsys.readouterr().out
