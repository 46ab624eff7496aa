"""The diagnosis plot on a messy multi-machine file: the panels explain the alarms, lines break at
gaps and between machines, episodes are named, and the HTML renders in a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memae_ts.detection.alarms import AlarmRule
from memae_ts.detection.scoring import RowScores
from memae_ts.errors import DataError
from memae_ts.evaluation.plot import (
    choose_assets,
    diagnose,
    figure,
    gap_seconds,
    parse_bound,
    rank_sensors,
    render_html,
)
from memae_ts.io.data import frame_to_sensor_data, load_csv
from memae_ts.io.demo_data import SENSORS, generate_fleet

pytest.importorskip("matplotlib")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def fleet_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two pumps in one file, five-minute readings: faults, a two-hour outage each, empty cells."""
    path = tmp_path_factory.mktemp("fleet") / "plant.csv"
    generate_fleet(assets=2, days=3, period_seconds=300, seed=2).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fleet(tiny_model_dir: Path, fleet_csv: Path) -> tuple[Any, Any, RowScores]:
    from memae_ts.estimator import load

    model = load(tiny_model_dir, engine="numpy")
    data = load_csv(fleet_csv, sensors=model.sensors_, asset_column="asset", label_column="anomaly")
    data, result = model.score_rows(data)
    return model, data, result


def view_of(model: Any, data: Any, result: RowScores, **kwargs: Any) -> Any:
    config = model.bundle_.config
    return diagnose(
        data,
        result,
        max_gap_seconds=gap_seconds(config),
        rule=AlarmRule.from_config(config.get("alarm")),
        center=model.scaler_.center,
        scale=model.scaler_.scale,
        **kwargs,
    )


def segments(line: Any) -> list[tuple[np.datetime64, np.datetime64]]:
    """(first x, last x) of each unbroken run of a Line2D (runs end at NaN)."""
    x = np.asarray(line.get_xdata())
    y = np.asarray(line.get_ydata(), dtype=np.float64)
    finite = np.isfinite(y)
    runs = []
    i = 0
    while i < y.size:
        if not finite[i]:
            i += 1
            continue
        j = i
        while j + 1 < y.size and finite[j + 1]:
            j += 1
        runs.append((x[i], x[j]))
        i = j + 1
    return runs


def test_two_assets_panels_explain_the_alarms_and_lines_break_at_the_outage(fleet: Any) -> None:
    model, data, result = fleet
    gap = gap_seconds(model.bundle_.config)
    assert gap is not None
    for asset in ("pump-1", "pump-2"):
        rows = np.flatnonzero(data.assets == asset)
        view = view_of(model, data, result, asset=asset, panels=4)
        # The panels are the sensors with the largest summed error share over the rule's alarmed
        # windows, computed here independently of the plot code.
        # The alarm decision and episodes `memae-ts score` writes for this asset.
        assert result.alarm is not None
        alarm = result.alarm[rows]
        episodes = [e for e in result.episodes if e.asset == asset]
        assert alarm.any(), "the faults in the demo file must alarm"
        c = result.contributions[rows][alarm]
        expected = np.argsort(-(c / c.sum(axis=1, keepdims=True)).sum(axis=0), kind="stable")[:4]
        assert view.sensors == [data.sensors[j] for j in expected]
        assert view.sensors[:2] != data.sensors[:2]  # not simply the first sensors of the file
        assert "summed share of the error over" in view.subtitle[1]

        fig = figure(view)
        axes = fig.get_axes()
        strips = 2 if result.mode is None else 3  # the share strip, [the mode strip,] the score
        assert len(axes) == 4 + strips
        assert [ax.get_ylabel().split("\n")[0] for ax in axes[:4]] == view.sensors
        assert f"asset {asset}" in fig._suptitle.get_text()
        assert "lines broken at 1 gap(s)" in fig._suptitle.get_text()

        # The outage: two hours without rows. No line of any panel spans it, and the NaN sits in it.
        times = data.timestamps[rows].tz_localize(None).to_numpy()
        steps = np.diff(times) / np.timedelta64(1, "s")
        at = int(np.flatnonzero(steps > gap)[0])
        before, after = times[at], times[at + 1]
        for ax in [*axes[:4], axes[-1]]:
            line = ax.get_lines()[0]
            x = np.asarray(line.get_xdata())
            y = np.asarray(line.get_ydata(), dtype=np.float64)
            inside = (x > before) & (x < after)
            assert inside.sum() == 1 and np.isnan(y[inside]).all()
            for first, last in segments(line):
                jumps = np.diff(x[(x >= first) & (x <= last)]) / np.timedelta64(1, "s")
                assert jumps.max(initial=0) <= gap
        # The view holds this asset's rows only: nothing of the other pump is drawn.
        assert view.x.size == rows.size
        # Episodes: as many as the rule finds, each named with its top sensors under the picture.
        assert len(view.episodes) == len(episodes)
        for mark, episode in zip(view.episodes, episodes, strict=True):
            assert pd.Timestamp(view.x[mark.start], tz="UTC").timestamp() == episode.start
            assert pd.Timestamp(view.x[mark.stop - 1], tz="UTC").timestamp() == episode.end
        assert fig.texts and all(line in fig.texts[-1].get_text() for line in view.episode_lines)
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_lines_break_between_assets_when_a_view_holds_several(fleet: Any) -> None:
    model, data, result = fleet
    view = view_of(model, data, result, asset=None)
    boundary = int(np.flatnonzero(data.assets[1:] != data.assets[:-1])[0]) + 1
    assert boundary in view.breaks.tolist()
    fig = figure(view)
    line = fig.get_axes()[0].get_lines()[0]
    y = np.asarray(line.get_ydata(), dtype=np.float64)
    position = boundary + int((view.breaks < boundary).sum())  # where the NaN went
    assert np.isnan(y[position])
    assert len(view.breaks) == 3  # one outage per pump and the change of pump
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_start_and_end_select_a_window_and_keep_an_episode_open_at_the_edge(fleet: Any) -> None:
    model, data, result = fleet
    whole = view_of(model, data, result, asset="pump-1")
    last = whole.episodes[-1]
    start_time = pd.Timestamp(whole.x[last.start + 2], tz="UTC")  # inside the episode
    view = view_of(model, data, result, asset="pump-1", start=start_time)
    assert view.x[0] == whole.x[last.start + 2]
    assert view.episodes and view.episodes[0].start == 0  # still shaded from the first row
    with pytest.raises(DataError, match="no rows of asset pump-1"):
        view_of(model, data, result, asset="pump-1", start=pd.Timestamp("2030-01-01", tz="UTC"))


def test_panels_by_alarm_share_not_file_order_and_by_distance_without_alarms() -> None:
    rng = np.random.default_rng(0)
    n, s = 400, 10
    sensors = [f"s{j}" for j in range(s)]
    values = rng.normal(0, 1, (n, s))
    contributions = rng.uniform(0.5, 1.0, (n, s))
    alarm = np.zeros(n, dtype=bool)
    alarm[100:140] = True
    contributions[100:140, 9] = 40.0  # the last sensor explains the alarm
    contributions[100:140, 7] = 10.0
    order, shares, rule = rank_sensors(sensors, values, contributions, alarm, np.zeros(s), np.ones(s))
    assert order[:2] == [9, 7]
    assert shares[0] is not None and shares[0] > shares[1] > 0.1
    assert "40 alarmed windows" in rule

    values[:, 5] += 6.0  # far from its training level
    order, shares, rule = rank_sensors(
        sensors, values, contributions, np.zeros(n, bool), np.zeros(s), np.ones(s)
    )
    assert order[0] == 5 and shares[0] is None
    assert "no alarm in view" in rule and "training" in rule


def plt_close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def synthetic(n: int = 300, modes: bool = False) -> tuple[Any, RowScores, np.ndarray | None]:
    times = pd.date_range("2026-11-13", periods=n, freq="60s")  # day 13: day first
    frame = pd.DataFrame({"timestamp": times.strftime("%d.%m.%Y %H:%M")})
    rng = np.random.default_rng(1)
    for j in range(4):
        frame[f"tag{j}"] = rng.normal(0, 1, n)
    data = frame_to_sensor_data(frame, time_column="timestamp")
    normalised = np.full(n, 0.3)
    normalised[:10] = np.nan  # warm-up
    normalised[150:170] = 5.0
    contributions = np.ones((n, 4))
    contributions[150:170, 2] = 30.0
    result = RowScores(
        score=normalised * 2, normalised=normalised, contributions=contributions, threshold=2.0
    )
    mode = np.where(np.arange(n) < 200, 0, 1).astype(float) if modes else None
    return data, result, mode


def test_episode_named_with_its_top_sensor_and_mode_strip() -> None:
    data, result, modes = synthetic(modes=True)
    view = diagnose(data, result, max_gap_seconds=180, panels=2, modes=modes)
    assert len(view.episodes) == 1 and view.episode_lines[0].startswith(
        "1: 2026-11-13 02:32 .. 2026-11-13 02:51"
    )  # raised at the 3rd of 5
    assert "tag2" in view.episode_lines[0] and view.sensors[0] == "tag2"
    fig = figure(view)
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert labels[-2] == "operating\nmode" and len(labels) == 2 + 3
    plt_close(fig)

    # Still on at the end of the data, and a novel-mode score drawn beside the reconstruction one.
    result.normalised[285:] = 4.0
    result.novelty = np.full(len(result.normalised), 0.5)
    view = diagnose(data, result, max_gap_seconds=180, panels=2)
    assert len(view.episodes) == 2 and view.episode_lines[1].endswith("(still on at the end of the data)")
    fig = figure(view)
    assert "novel-mode score" in [line.get_label() for line in fig.get_axes()[-1].get_lines()]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_start_end_read_like_the_data_times() -> None:
    data, result, _ = synthetic()
    assert data.summary.time is not None and "%d.%m.%Y" in data.summary.time["format"]
    start = parse_bound("13.11.2026 02:00", "--start", data, None, None)
    assert start == pd.Timestamp("2026-11-13T02:00", tz="UTC")
    assert parse_bound("2026-11-13T03:00", "--end", data, None, None) == pd.Timestamp("2026-11-13T03:00Z")
    local = parse_bound("13.11.2026 02:00", "--start", data, "Europe/Berlin", None)
    assert local == pd.Timestamp("2026-11-13T01:00", tz="UTC")
    with pytest.raises(
        DataError, match=r"--start 'yesterday': not a time like the data's such as '13.11.2026"
    ):
        parse_bound("yesterday", "--start", data, None, None)
    view = diagnose(data, result, start=start, end=pd.Timestamp("2026-11-13T03:00Z"), max_gap_seconds=180)
    assert view.x.size == 61


def test_asset_choice_is_said_and_unknown_assets_name_the_known_ones(fleet: Any) -> None:
    _, data, _ = fleet
    assets, note = choose_assets(data, {"pump-1": 3, "pump-2": 9}, None)
    assert assets == ["pump-2"] and "plotted pump-2" in note and "--asset all" in note
    assert choose_assets(data, {}, "all")[0] == ["pump-1", "pump-2"]
    with pytest.raises(DataError, match=r"--asset pump-9: no such asset .* assets: pump-1, pump-2"):
        choose_assets(data, {}, "pump-9")
    from memae_ts.cli.commands.plot import has_rows

    last = data.timestamps[data.assets == "pump-1"][-1]
    assert has_rows(data, "pump-1", last, None) and not has_rows(
        data, "pump-1", last + pd.Timedelta("1s"), None
    )
    single = replace(data, assets=None)
    with pytest.raises(DataError, match="has no asset column"):
        choose_assets(single, {}, "pump-1")


@pytest.mark.slow  # two CLI runs, each loads and scores the file
def test_cli_asset_all_writes_one_file_per_machine_and_bad_start_is_one_line(
    tiny_model_dir: Path, fleet_csv: Path, tmp_path: Path
) -> None:
    model = str(tiny_model_dir)
    common = ["--asset-column", "asset", "--label-column", "anomaly", "--engine", "numpy"]
    out = tmp_path / "plant.png"
    done = run_cli("plot", model, str(fleet_csv), "-o", str(out), "--asset", "all", *common)
    assert done.returncode == 0, done.stderr
    for asset in ("pump-1", "pump-2"):
        png = tmp_path / f"plant-{asset}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"asset {asset}: plot written to {png}" in done.stderr
    done = run_cli("plot", model, str(fleet_csv), "-o", str(out), "--start", "someday", *common)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--start 'someday'" in done.stderr


@pytest.mark.slow  # a real browser started twice
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium missing; run `make tools`")
def test_html_is_one_file_and_renders_in_headless_chromium(fleet: Any, tmp_path: Path) -> None:
    model, data, result = fleet
    view = view_of(model, data, result, asset="pump-2")
    html = tmp_path / "pump-2.html"
    render_html(view, str(html))
    text = html.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # plotly.js inlined
    assert len(text) > 3_000_000

    profile = tmp_path / "profile"
    browser = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,1600", "--virtual-time-budget=15000",
        "--enable-logging=stderr", "--v=0",
    ]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr  # no JavaScript error on the console
    assert 'class="main-svg"' in dom.stdout  # plotly drew its SVG
    assert dom.stdout.count('class="scatterlayer') >= len(view.sensors) + 1  # a trace layer per panel
    assert "asset pump-2" in dom.stdout and view.sensors[0] in dom.stdout

    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [*browser, f"--screenshot={shot}", html.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10  # not blank
    colored = (np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 40).mean()
    assert colored > 0.01  # coloured traces and shading rendered, not only black text on white


def test_missing_plotly_is_one_line_naming_the_extra(
    tiny_model_dir: Path, fleet_csv: Path, tmp_path: Path
) -> None:
    # Removing an installed package on demand is what a real part cannot do: hide it from import.
    code = (
        "import sys; sys.modules['plotly'] = None; from memae_ts.cli import main; "
        f"sys.exit(main(['plot', {str(tiny_model_dir)!r}, {str(fleet_csv)!r}, '-o', "
        f"{str(tmp_path / 'x.html')!r}, '--asset-column', 'asset']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "memae-ts[plot]" in done.stderr
    assert not (tmp_path / "x.html").exists()
    assert SENSORS  # the file has the demo sensors the model was trained on
