"""CSV reading: separators, columns, and a clear error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memae_ts.errors import DataError
from memae_ts.io.data import DataWarning, load_csv, sniff_separator


def write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_semicolon_file_like_skab(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "datetime;P;T;anomaly;changepoint\n"
        "2020-03-09 10:14:33;1.0;20.5;0.0;0.0\n"
        "2020-03-09 10:14:34;1.1;20.6;1.0;0.0\n",
    )
    assert sniff_separator(path.read_text()) == ";"
    data = load_csv(path, label_column="anomaly")
    assert data.sensors == ["P", "T"]  # anomaly and changepoint are never inputs
    assert data.time_column == "datetime"
    assert data.labels.tolist() == [0, 1]
    np.testing.assert_allclose(data.values, [[1.0, 20.5], [1.1, 20.6]])


def test_decimal_comma_and_text_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "Zeit;Druck;Status\n2026-01-01T00:00:00Z;1,5;RUN\n2026-01-01T00:01:00Z;1,75;RUN\n")
    data = load_csv(path)
    assert data.sensors == ["Druck"]
    assert data.ignored_columns == ["Status"]
    np.testing.assert_allclose(data.values[:, 0], [1.5, 1.75])


def test_time_column_detected_by_content_and_epoch(tmp_path: Path) -> None:
    path = write(tmp_path, "when,a\n2026-01-01 00:00,1\n2026-01-01 00:01,2\n")
    assert load_csv(path).time_column == "when"
    epoch = write(tmp_path, "timestamp,a\n1700000000,1\n1700000060,2\n", "e.csv")
    data = load_csv(epoch)
    assert data.timestamps[1].isoformat() == "2023-11-14T22:14:20+00:00"


def test_exclude_and_explicit_time_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t,a,b,c\n2026-01-01,1,2,3\n2026-01-02,1,2,4\n")
    data = load_csv(path, time_column="t", exclude=["b"])
    assert data.sensors == ["a", "c"]
    with pytest.raises(DataError, match="time column 'nope' not found"):
        load_csv(path, time_column="nope")


def test_stray_text_in_a_sensor_is_a_counted_missing_value(tmp_path: Path) -> None:
    rows = "".join(f"2026-01-01T00:{i:02d}:00Z,{i}.0,1\n" for i in range(20))
    rows += "2026-01-01T00:20:00Z,oops,1\n"
    path = write(tmp_path, "timestamp,flow,p\n" + rows)
    with pytest.warns(DataWarning, match=r"quality markers read as missing values: 'flow': 1 \('oops' 1\)"):
        data = load_csv(path)
    assert data.sensors == ["flow", "p"]
    assert np.isnan(data.values[20, 0]) and data.invalid[20, 0] and not data.invalid[:20].any()
    assert data.summary.missing["flow"] == {"oops": 1}


def test_bad_timestamp_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,a\n2026-01-01,1\nyesterday,2\n")
    with pytest.raises(DataError, match=r"line 3 \('yesterday'\)"):
        load_csv(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file is empty"),
        ("a,b\n", "header only"),
        ("timestamp,status\n2026-01-01,ok\n", "no numeric sensor"),
    ],
)
def test_empty_inputs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_csv(write(tmp_path, text))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path)


def test_duplicate_and_unsorted_timestamps_warn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,a\n2026-01-01T00:02:00Z,3\n2026-01-01T00:00:00Z,1\n"
        "2026-01-01T00:01:00Z,2\n2026-01-01T00:01:00Z,9\n",
    )
    with (
        pytest.warns(DataWarning, match="not in time order"),
        pytest.raises(DataError, match=r"1 of 4 rows \(25.0 %\) repeat a timestamp.*--asset-column"),
    ):
        load_csv(path)
    with pytest.warns(DataWarning) as record:
        data = load_csv(path, drop_duplicates=True)
    messages = " ".join(str(w.message) for w in record)
    assert "not in time order" in messages
    assert "1 duplicate timestamp(s)" in messages and "line(s) 5" in messages
    assert data.values[:, 0].tolist() == [1, 2, 3]


def test_model_sensors_must_be_present(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,a,c\n2026-01-01,1,2\n")
    with pytest.raises(
        DataError, match=r"sensor column\(s\) \['b'\] are missing; the model expects \['a', 'b'\]"
    ):
        load_csv(path, sensors=["a", "b"])
    with pytest.warns(DataWarning, match=r"\['c'\] are not used"):
        data = load_csv(path, sensors=["a"])
    assert data.sensors == ["a"]


def test_infinite_and_binary_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,a\n2026-01-01,1\n2026-01-02,inf\n")
    with pytest.raises(DataError, match="infinite values at line 3"):
        load_csv(path)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\x00\x00")
    with pytest.raises(DataError):
        load_csv(binary)
