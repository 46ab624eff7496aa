"""`memae-ts refit MODEL DATA -o NEW`: the same settings, a comparison on the held-out tail, a
recommendation by a stated rule, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from memae_ts.cli import main
from memae_ts.cli.commands.refit import _recommend
from memae_ts.io.demo_data import generate


@pytest.fixture(scope="module")
def drifted_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recent normal operation of a plant that now runs warmer: the bearing 12 K up, a flow
    dropout, a two-hour gap in the export."""
    df = generate(days=4, period_seconds=300, seed=9, faults=False)
    df["bearing_temp_c"] += 12.0
    df.loc[df.index[300:304], "flow_m3h"] = np.nan
    df = df.drop(df.index[600:624])
    path = tmp_path_factory.mktemp("refit") / "recent.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_refit_reuses_the_settings_and_recommends_the_new_model_after_drift(
    tiny_model_dir, drifted_csv, tmp_path, capsys
):
    out = tmp_path / "new-model"
    assert main(["refit", str(tiny_model_dir), str(drifted_csv), "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    old = json.loads((tiny_model_dir / "config.json").read_text())
    new = json.loads((out / "config.json").read_text())
    skip = {"verbose"}
    old_params = {k: v for k, v in old["training"]["params"].items() if k not in skip}
    assert {k: v for k, v in new["training"]["params"].items() if k not in skip} == old_params
    assert new["sensors"] == old["sensors"] and new["window"] == old["window"]
    assert new["training"]["data_source"] == "recent.csv"
    assert "sensor_range" in new["training"]  # the edge daemon's drift metric can use it

    assert f"settings       reused from {tiny_model_dir}: arch conv, window 16" in printed
    table = {}
    for line in printed.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 3:
            table[parts[0]] = parts[1:]

    def percents(name: str) -> tuple[float, float]:
        old, new = (float(cell.split()[0]) for cell in table[name])
        return old, new

    old_far, new_far = percents("false alarms (windows >= 1)")
    assert old_far > 5 * new_far and old_far > 1.0  # the warmer bearing reads as a fault to MODEL
    assert float(table["normalised score p99"][0]) > float(table["normalised score p99"][1])
    outside_old, outside_new = percents("rows outside training range")
    assert outside_old > 10 and outside_old > 4 * outside_new  # the bearing: above what MODEL saw
    assert "recommendation swap to NEW" in printed
    assert "rule           swap when MODEL's false-alarm rate" in printed


def test_the_recommendation_rule():
    def row(far: float, labelled: int = 0, flagged: int = 0) -> dict:
        return {"false_alarm_rate": far, "labelled": labelled, "flagged": flagged}

    assert _recommend(row(0.005), row(0.0), 0.01)[0] is False  # MODEL is within the limit
    assert _recommend(row(0.05), row(0.06), 0.01)[0] is False  # NEW is no better
    swap, reason = _recommend(row(0.05, 10, 8), row(0.01, 10, 5), 0.01)
    assert swap is False and "fewer labelled rows" in reason  # NEW would miss faults
    swap, reason = _recommend(row(0.05, 10, 8), row(0.01, 10, 8), 0.01)
    assert swap is True and "5.0%" in reason and "1.0%" in reason
    assert _recommend(row(float("nan")), row(0.0), 0.01)[0] is False


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--holdout", "1.5"], "--holdout 1.5"),
        (["--max-false-alarm-rate", "2"], "--max-false-alarm-rate 2"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tiny_model_dir, drifted_csv, tmp_path, capsys, args, needle):
    code = main(["refit", str(tiny_model_dir), str(drifted_csv), "-o", str(tmp_path / "n"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_data_without_a_sensor_of_the_model_is_one_line_naming_it(
    tiny_model_dir, drifted_csv, tmp_path, capsys
):
    lacking = tmp_path / "lacking.csv"
    text = drifted_csv.read_text().splitlines()
    header = text[0].split(",")
    drop = header.index("vibration_mm_s")
    kept = [",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in text]
    lacking.write_text("\n".join(kept))
    code = main(["refit", str(tiny_model_dir), str(lacking), "-o", str(tmp_path / "n")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "vibration_mm_s" in err[0], err
    assert not (tmp_path / "n").exists()


def test_a_model_that_is_not_a_bundle_is_one_line(drifted_csv, tmp_path, capsys):
    code = main(["refit", str(tmp_path / "nothing"), str(drifted_csv), "-o", str(tmp_path / "n")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing" in err[0], err
