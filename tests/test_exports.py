"""Realistic historian exports: each parses to the right times and sensors, or stops with one
line naming the file, line and the option that fixes it.

The files are built the way PI, WinCC, Ignition and Excel write them (German and US locales,
Windows-1252, units rows, quality markers, several machines, by-exception sampling), and the
checks are on the parsed result, not on "no exception".
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memae_ts.cli import main
from memae_ts.errors import DataError
from memae_ts.io.data import DataWarning, load_csv, load_data
from memae_ts.io.reading import ReadOptions
from memae_ts.io.summary import EMPTY


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; data warnings are printed, as for a user, not raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def german_export(times: pd.DatetimeIndex, values: np.ndarray) -> str:
    """WinCC/Excel in a German locale: `;`, decimal comma, dd.mm.yyyy HH:MM, umlauts."""
    lines = ["Zeitstempel;Drehzahl;Durchfluss m³/h;Öltemperatur °C"]
    for t, row in zip(times, values, strict=True):
        cells = ";".join(f"{v:.3f}".replace(".", ",") for v in row)
        lines.append(f"{t:%d.%m.%Y %H:%M};{cells}")
    return "\r\n".join(lines) + "\r\n"


def series(
    n: int = 120, start: str = "2026-10-01 00:00", freq: str = "1min"
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    times = pd.date_range(start, periods=n, freq=freq)
    rng = np.random.default_rng(0)
    values = np.column_stack(
        [1480 + rng.normal(0, 2, n), 120 + rng.normal(0, 1, n), 55 + rng.normal(0, 0.5, n)]
    )
    return times, values


# ---------------------------------------------------------------------- German export
def test_german_export_with_day_above_12_reads_every_time_right(tmp_path: Path) -> None:
    # 1 October to 14 October: the first field goes above 12 on the 13th, which proves day-first.
    times, values = series(n=14 * 24, freq="1h")
    path = tmp_path / "export.csv"
    path.write_bytes(german_export(times, values).encode("cp1252"))
    data = load_csv(path, options=ReadOptions(encoding="cp1252"))
    assert list(data.timestamps.tz_convert(None)) == list(times)  # not 10 January
    assert data.sensors == ["Drehzahl", "Durchfluss m³/h", "Öltemperatur °C"]
    np.testing.assert_allclose(data.values, np.round(values, 3))
    assert data.summary.time["format"] == "%d.%m.%Y %H:%M"
    assert "day first" in data.summary.time["reason"] and "13.10.2026" in data.summary.time["reason"]
    assert data.summary.separator == ";" and data.summary.decimal == ","
    assert data.summary.period_seconds == 3600


def test_german_export_without_day_above_12_asks_instead_of_guessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    times, values = series(n=120)  # all on 1 October: 01.10.2026 could be 10 January
    path = tmp_path / "export.csv"
    path.write_bytes(german_export(times, values).encode("cp1252"))
    code, _, err = cli("inspect", str(path), "--encoding", "cp1252", capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "line 2 ('01.10.2026 00:00') is 01 October or 10 January" in err
    assert "--dayfirst" in err and str(path) in err
    code, out, _ = cli("inspect", str(path), "--encoding", "cp1252", "--dayfirst", capsys=capsys)
    assert code == 0
    assert "'01.10.2026 00:00' -> 2026-10-01T00:00:00+00:00" in out
    monthfirst = load_csv(path, options=ReadOptions(encoding="cp1252", dayfirst=False))
    assert monthfirst.timestamps[0] == pd.Timestamp("2026-01-10", tz="UTC")


def test_windows_1252_without_encoding_names_line_and_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    times, values = series(n=30, start="2026-10-13")
    path = tmp_path / "export.csv"
    path.write_bytes(german_export(times, values).encode("cp1252"))
    code, _, err = cli("fit", str(path), capsys=capsys)
    assert code == 2
    assert f"{path}: line 1 is not UTF-8 (byte 0xb3)" in err and "--encoding cp1252" in err


def test_units_row_under_the_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    times, values = series(n=40, start="2026-10-13")
    text = german_export(times, values).split("\r\n")
    text.insert(1, ";rpm;m³/h;°C")
    path = tmp_path / "units.csv"
    path.write_text("\n".join(text), encoding="utf-8")
    code, _, err = cli("inspect", str(path), capsys=capsys)
    assert code == 2
    assert "line 2 ('')" in err or "line 2 has no timestamp" in err
    assert "--skip-rows" in err or "drop those rows" in err
    data = load_csv(path, options=ReadOptions(skip_rows=1))
    assert data.row_numbers[0] == 3 and len(data) == 40
    assert data.summary.skipped_rows == 1
    assert data.summary.missing == {s: {} for s in data.sensors}


def test_units_row_with_a_time_cell_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "units.csv"
    path.write_text("time,a,b\nunit,bar,°C\n2026-10-01 00:00,1,2\n2026-10-01 00:01,1,2\n")
    code, _, err = cli("inspect", str(path), capsys=capsys)
    assert code == 2
    assert "line 2 ('unit')" in err and "--skip-rows" in err


# ---------------------------------------------------------------------- other locales and clocks
def test_us_excel_export_month_first_with_am_pm(tmp_path: Path) -> None:
    times = pd.date_range("2026-10-13 11:58", periods=5, freq="1min")
    rows = [f"{t.month}/{t.day}/{t.year} {t:%I:%M %p},{i}" for i, t in enumerate(times)]
    path = tmp_path / "us.csv"
    path.write_text("Time,Flow\n" + "\n".join(rows) + "\n")
    data = load_csv(path)
    assert list(data.timestamps.tz_convert(None)) == list(times)  # 12:00 PM is noon
    assert data.summary.time["format"] == "%m/%d/%Y %I:%M %p"
    assert "month first" in data.summary.time["reason"]


def test_iso_with_offsets_across_a_daylight_saving_change(tmp_path: Path) -> None:
    path = tmp_path / "iso.csv"
    path.write_text(
        "timestamp,p\n2026-10-25T02:30:00+02:00,1\n2026-10-25T02:00:00+01:00,2\n2026-10-25T02:30:00+01:00,3\n"
    )
    data = load_csv(path)
    assert [t.isoformat() for t in data.timestamps] == [
        "2026-10-25T00:30:00+00:00",
        "2026-10-25T01:00:00+00:00",
        "2026-10-25T01:30:00+00:00",
    ]
    assert "UTC offsets in the data" in data.summary.time["timezone"]


def test_naive_local_times_with_tz_resolve_the_repeated_hour(tmp_path: Path) -> None:
    times = [
        "2026-10-25 01:30",
        "2026-10-25 02:00",
        "2026-10-25 02:30",
        "2026-10-25 02:00",
        "2026-10-25 02:30",
    ]
    path = tmp_path / "local.csv"
    path.write_text("timestamp,p\n" + "".join(f"{t},{i}\n" for i, t in enumerate(times)))
    data = load_csv(path, options=ReadOptions(tz="Europe/Berlin"))
    assert np.all(np.diff(data.timestamps.asi8) == 30 * 60 * 10**9)  # one steady half-hour step
    assert data.values[:, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"repeat a timestamp.*--tz"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            load_csv(path)  # taken as UTC, the repeated hour is two rows per timestamp


def test_epoch_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "epoch.csv"
    path.write_text("ts,a\n1790000000000,1\n1790000001000,2\n1790000002000,3\n")
    data = load_csv(path)
    assert data.timestamps[0] == pd.Timestamp(1790000000, unit="s", tz="UTC")
    assert data.summary.time["format"].startswith("epoch-ms") and data.summary.period_seconds == 1


def test_mixed_formats_in_one_column_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("time,a\n13.10.2026 00:00,1\n13.10.2026 00:01,2\n2026-10-13 00:02,3\n")
    with pytest.raises(DataError, match=r"line 4 \('2026-10-13 00:02'\) does not match '%d.%m.%Y %H:%M'"):
        load_csv(path)


# ---------------------------------------------------------------------- quality markers
@pytest.mark.parametrize("share", [0.01, 0.3])
def test_quality_markers_are_counted_missing_values(tmp_path: Path, share: float) -> None:
    n = 400
    rng = np.random.default_rng(1)
    times = pd.date_range("2026-10-01", periods=n, freq="10s")
    flow = np.round(100 + rng.normal(0, 1, n), 2).astype(str).astype(object)
    marked = rng.choice(n, size=int(n * share), replace=False)
    markers = np.array(["Bad", "I/O Timeout", "Shutdown"], dtype=object)[np.arange(marked.size) % 3]
    flow[marked] = markers
    frame = pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"), "flow": flow, "status": "RUN"})
    frame["pressure"] = 5.0
    path = tmp_path / "pi.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(DataWarning, match="quality markers read as missing values: 'flow'"):
        data = load_csv(path)
    assert data.sensors == ["flow", "pressure"]  # the sensor stays; the text column goes
    assert data.summary.ignored == [["status", "text: 100 % of its values are not numbers (e.g. 'RUN')"]]
    expected = {
        m: int((markers == m).sum()) for m in ("Bad", "I/O Timeout", "Shutdown") if (markers == m).any()
    }
    assert data.summary.missing["flow"] == dict(sorted(expected.items(), key=lambda kv: -kv[1]))
    assert int(np.isnan(data.values[:, 0]).sum()) == marked.size
    assert data.invalid[:, 0].sum() == marked.size


def test_mostly_text_sensor_is_dropped_with_its_reason_and_na_values_add_markers(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    rows = [f"2026-10-01T00:{i:02d}:00Z,{'Bad' if i % 3 else i},{-9999 if i == 5 else i}" for i in range(30)]
    path.write_text("timestamp,flaky,level\n" + "\n".join(rows) + "\n")
    with pytest.warns(DataWarning, match=r"'level': 1 \('-9999' 1\)"):
        data = load_csv(path, options=ReadOptions(na_values=("-9999",)))
    assert data.sensors == ["level"]
    assert data.summary.ignored[0][0] == "flaky" and "67 %" in data.summary.ignored[0][1]
    assert data.summary.missing["level"] == {"-9999": 1}
    assert np.isnan(data.values[5, 0])
    with pytest.warns(DataWarning, match="'flaky': 20 \\('Bad' 20\\)"):
        forced = load_csv(path, options=ReadOptions(na_values=("Bad",)))
    assert forced.sensors == ["flaky", "level"]


def test_empty_cells_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("timestamp,a,b\n2026-10-01 00:00,1,\n2026-10-01 00:01,,2\n2026-10-01 00:02,3,NA\n")
    data = load_csv(path)
    assert data.summary.missing == {"a": {EMPTY: 1}, "b": {EMPTY: 2}}


# ---------------------------------------------------------------------- several machines
def two_machines(tmp_path: Path, offset: str = "0s") -> Path:
    times = pd.date_range("2026-10-01", periods=100, freq="1min")
    a = pd.DataFrame({"timestamp": times, "machine": "P-101", "flow": 100.0 + np.arange(100) % 7})
    b = pd.DataFrame({"timestamp": times + pd.Timedelta(offset), "machine": "P-102", "flow": 50.0})
    frame = pd.concat([a, b]).sort_values("timestamp", kind="stable")
    path = tmp_path / "two.csv"
    frame.to_csv(path, index=False)
    return path


def test_two_machines_interleaved_are_refused_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = two_machines(tmp_path)
    code, _, err = cli("fit", str(path), "--epochs", "1", capsys=capsys)
    assert code == 2
    assert "100 of 200 rows (50.0 %) repeat a timestamp" in err
    assert "column 'machine' looks like it names machines" in err and "--asset-column machine" in err
    data = load_csv(path, asset_column="machine")
    assert len(data) == 200 and data.summary.assets == 2 and data.summary.duplicates_dropped == 0


def test_two_machines_with_offset_clocks_are_suspected(tmp_path: Path) -> None:
    data = load_csv(two_machines(tmp_path, offset="30s"))
    assert data.summary.suspected_asset is not None
    assert data.summary.suspected_asset[0] == "machine"
    assert "--asset-column machine" in data.summary.format()


# ---------------------------------------------------------------------- labels, sampling
def test_irregular_sampling_is_said_and_resample_regularises(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    steps = rng.exponential(20, 300).round() + 1  # by exception: a row when a value changed
    times = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="s")
    frame = pd.DataFrame({"timestamp": times, "a": rng.normal(size=300)})
    path = tmp_path / "pi.csv"
    frame.to_csv(path, index=False)
    data = load_csv(path)
    assert data.summary.irregular and "--resample" in data.summary.sampling
    from memae_ts.io.regular import make_spec, resample_data

    grid = resample_data(data, make_spec("10s", "hold", None))
    assert np.all(np.diff(grid.timestamps.asi8) == 10 * 10**9)
    assert "10 s" in grid.summary.resample["description"]


# ---------------------------------------------------------------------- inputs
def test_parquet_stdin_and_dataframe_index_read_like_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times, values = series(n=50, start="2026-10-13")
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame.insert(0, "timestamp", times.tz_localize("UTC"))
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    parquet = tmp_path / "d.parquet"
    frame.to_parquet(parquet)
    reference = load_csv(csv)
    from_parquet = load_data(parquet)
    assert from_parquet.summary.file_format == "parquet"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(csv.read_bytes())))
    from_stdin = load_data("-")
    from memae_ts.io.data import frame_to_sensor_data

    from_index = frame_to_sensor_data(frame.set_index("timestamp"))
    for other in (from_parquet, from_stdin, from_index):
        assert other.sensors == reference.sensors
        np.testing.assert_array_equal(other.values, reference.values)
        assert list(other.timestamps) == list(reference.timestamps)


def test_numpy_array_and_bad_types_in_the_api() -> None:
    from memae_ts.io.data import array_to_sensor_data

    data = array_to_sensor_data(np.arange(12.0).reshape(4, 3))
    assert data.sensors == ["x0", "x1", "x2"] and data.timestamps is None
    with pytest.raises(DataError, match="2-D numeric array"):
        array_to_sensor_data(np.array([["a", "b"]]))
    with pytest.raises(DataError, match="X has 3 features, but MemAE is expecting 2 features"):
        array_to_sensor_data(np.zeros((4, 3)), sensors=["p", "q"])


def test_every_input_form_gives_the_same_scores(
    tiny_model_dir: Path, plant_csvs: tuple[Path, Path], tmp_path: Path
) -> None:
    from memae_ts import load

    model = load(tiny_model_dir, engine="numpy")
    live = pd.read_csv(plant_csvs[1])
    reference = model.score_samples(plant_csvs[1])
    german = live.copy()
    german["timestamp"] = pd.to_datetime(live["timestamp"]).dt.strftime("%d.%m.%Y %H:%M")
    path = tmp_path / "de.csv"
    german.to_csv(path, sep=";", decimal=",", index=False, encoding="cp1252")
    model.time_format = None
    from memae_ts.io.data import load_csv as read

    de = read(path, sensors=model.sensors_, options=ReadOptions(encoding="cp1252", dayfirst=True))
    np.testing.assert_allclose(model.score_samples(de), reference, rtol=1e-6, equal_nan=True)
    indexed = live.assign(timestamp=pd.to_datetime(live["timestamp"])).set_index("timestamp")
    np.testing.assert_allclose(model.score_samples(indexed), reference, rtol=1e-12, equal_nan=True)
    array = live[model.sensors_].to_numpy()
    np.testing.assert_allclose(model.score_samples(array), reference, rtol=1e-12, equal_nan=True)
    parquet = tmp_path / "live.parquet"
    live.to_parquet(parquet)
    np.testing.assert_allclose(model.score_samples(parquet), reference, rtol=1e-12, equal_nan=True)


def test_fit_leaves_labelled_faults_out_and_says_so(
    plant_csvs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "m"
    code, stdout, _ = cli(
        "fit", str(plant_csvs[1]), "-o", str(out), "--epochs", "1", "--window", "8", "--channels", "4",
        "--latent", "4", "--memory-slots", "8", capsys=capsys,
    )  # fmt: skip
    assert code == 0
    labelled = int(pd.read_csv(plant_csvs[1])["anomaly"].sum())
    assert f"{labelled} row(s) labelled anomalous" in stdout
    assert "are left out of training and calibration" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["training"]["excluded_windows"] > labelled
    assert config["data"]["labelled_rows"] == labelled
    code, stdout, _ = cli("info", str(out), capsys=capsys)
    assert "time range     2026-11-01T00:00:00+00:00 .. " in stdout


def test_replay_reads_times_with_the_same_single_format(tmp_path: Path) -> None:
    from memae_ts.edge.replay import read_messages

    path = tmp_path / "de.csv"
    path.write_text("timestamp,a\n01.10.2026 00:00,1\n13.10.2026 00:00,2\n")
    times = [json.loads(value)["ts"] for _, value in read_messages(path)]
    assert times == ["2026-10-01T00:00:00Z", "2026-10-13T00:00:00Z"]  # not 10 January


def test_excel_sheet_with_typed_times(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    times, values = series(n=20)
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame.insert(0, "Zeit", times)
    path = tmp_path / "sheet.xlsx"
    frame.to_excel(path, index=False)
    data = load_data(path)
    assert data.summary.file_format.startswith("excel")
    assert data.summary.time["format"] == "native datetime column"
    assert list(data.timestamps.tz_convert(None)) == list(times)
    np.testing.assert_allclose(data.values, values)


def test_decimal_comma_with_thousands_separators(tmp_path: Path) -> None:
    path = tmp_path / "de.csv"
    path.write_text("Zeit;Drehzahl;Druck\n13.10.2026 00:00;1.480,5;2,5\n13.10.2026 00:01;1.479,25;2,75\n")
    data = load_csv(path)
    np.testing.assert_allclose(data.values, [[1480.5, 2.5], [1479.25, 2.75]])
    assert data.summary.missing == {"Drehzahl": {}, "Druck": {}}


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        (
            "timestamp,a,b\n2026-01-01,1,2\n2026-01-03,2,3,4,5\n",
            [],
            "Expected 3 fields in line 3, saw 5; pass --sep",
        ),
        ("timestamp,a\n2026-01-01,1\n", ["--encoding", "nope"], "--encoding: unknown encoding 'nope'"),
        (
            "timestamp,a\n2026-01-01,1\n",
            ["--sep", ";"],
            "one column only: is the separator ';' right? pass --sep",
        ),
        ("timestamp,a\n2026-01-01,1\n,2\n", [], "line 3 has no timestamp in column 'timestamp'"),
        (
            "timestamp,a\n2026-01-01,1\n",
            ["--time-format", "%d.%m.%Y"],
            "do not match --time-format '%d.%m.%Y'",
        ),
        ("timestamp,a\n2026-01-01,1\n", ["--tz", "Europe/Nowhere"], "--tz: unknown time zone"),
        ("timestamp,a\n2026-01-01,1\n", ["--skip-rows", "-2"], "--skip-rows must be 0 or more"),
        (
            "timestamp,a\n2026-01-01,1\n",
            ["--resample", "soon"],
            "--resample: cannot read 'soon' as a duration",
        ),
    ],
)
def test_bad_input_is_one_line_with_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, args: list[str], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, out, err = cli("inspect", str(path), *args, capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def by_exception_export(path: Path, bursts: int = 60, seed: int = 4) -> pd.DataFrame:
    """What a historian's compressed archive exports: a burst of rows while a value moves past
    its deadband, then nothing for minutes while it holds steady."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.uniform(300, 900, bursts))
    t = (starts[:, None] + np.arange(5) * 2.0).ravel()
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(t, unit="s"),
            "level": np.round(50 + 10 * np.sin(t / 600) + rng.normal(0, 0.05, t.size), 2),
            "temp": np.round(30 + 2 * np.sin(t / 900), 2),
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_resample_scores_a_by_exception_export_that_gap_rules_would_cut_to_pieces(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from memae_ts import MemAE

    path = tmp_path / "pi.csv"
    by_exception_export(path)
    data = load_csv(path)
    assert data.summary.irregular
    params = {"window": 8, "channels": (4,), "latent": 4, "memory_slots": 8, "epochs": 1, "seed": 0}
    with pytest.raises(DataError, match="no complete window of 8 rows"):
        MemAE(**params).fit(path)  # every stretch between two gaps is shorter than a window
    model = MemAE(**params, resample="10s").fit(path)
    assert model.bundle_.config["resample"]["period_seconds"] == 10
    assert model.bundle_.config["max_fill_rows"] == 0 and model.bundle_.config["max_gap_seconds"] is None
    scored, result = model.score_rows(path)
    assert np.all(np.diff(scored.timestamps.asi8) == 10**10)
    assert np.isfinite(result.score).mean() > 0.95
    per_row = model.score_samples(path)
    assert per_row.shape == (len(data),) and np.isfinite(per_row).mean() > 0.3


def test_loaded_model_tells_what_it_was_trained_on(tiny_model_dir: Path) -> None:
    from memae_ts import load

    summary = load(tiny_model_dir, engine="numpy").data_summary_
    assert summary is not None and summary.period_seconds == 300
    assert summary.time["format"] == "ISO8601" and "2026-11-01T00:00:00" in summary.format()


def test_progress_bars_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memae_ts.io import reading

    path = tmp_path / "d.csv"
    path.write_text(
        "timestamp,a\n" + "".join(f"2026-10-01T00:{i // 60:02d}:{i % 60:02d}Z,{i}\n" for i in range(600))
    )
    monkeypatch.setattr(reading, "PROGRESS_BYTES", 1000)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for terminal, expected in ((False, ""), (True, "reading d.csv")):
        stream = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        assert len(load_csv(path)) == 600
        assert expected in stream.getvalue() and (terminal or stream.getvalue() == "")
