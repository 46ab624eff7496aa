"""The Kafka message contract (docs/edge.md): what is accepted, what goes to the dead letters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from memae_ts.connectors.messages import (
    REASONS,
    InvalidMessage,
    ReadingParser,
    encode_reading_compact,
    encode_reading_object,
    encode_scores,
    format_timestamp,
    format_timestamps,
    parse_timestamp,
)

SENSORS = ["Pressure", "Temp", "Flow"]
T0 = 1_796_013_000.0  # 2026-11-30T04:30:00Z


@pytest.fixture
def parser() -> ReadingParser:
    return ReadingParser(SENSORS)


def test_object_form_orders_values_like_the_bundle_and_ignores_extra_sensors(parser):
    value = json.dumps(
        {
            "asset": "pump-7",
            "ts": "2026-11-30T04:30:00Z",
            "values": {"Flow": 3, "Extra": 9, "Temp": 2.5, "Pressure": 1.02},
        }
    ).encode()
    r = parser.parse(b"pump-7", value)
    assert r.asset == "pump-7"
    assert r.ts == T0
    np.testing.assert_array_equal(r.values, [1.02, 2.5, 3.0])


def test_object_form_takes_the_asset_from_the_key_when_the_body_has_none(parser):
    r = parser.parse(b"pump-9", b'{"ts": 1796013000, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}')
    assert (r.asset, r.ts) == ("pump-9", T0)


def test_compact_form_is_ts_then_values_in_sensor_order(parser):
    r = parser.parse(b"pump-7", encode_reading_compact("2026-11-30T04:30:00.250Z", [1.0, None, 3.0]))
    assert r.asset == "pump-7"
    assert r.ts == T0 + 0.25
    assert r.values[0] == 1.0 and math.isnan(r.values[1]) and r.values[2] == 3.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-30T04:30:00Z", T0),
        ("2026-11-30T05:30:00+01:00", T0),
        ("2026-11-30T04:30:00", T0),  # no zone: UTC
        ("2026-11-30 04:30:00.5", T0 + 0.5),
        (T0, T0),
        (int(T0), T0),
    ],
)
def test_timestamps_iso_8601_or_epoch_seconds(raw, expected):
    assert parse_timestamp(raw) == expected


def test_null_is_a_missing_value_not_an_error(parser):
    r = parser.parse(b"a", encode_reading_object("a", T0, {"Pressure": None, "Temp": 1, "Flow": 2}))
    assert math.isnan(r.values[0])


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"a", b"{not json", "bad_json"),
        (b"a", b"\xff\xfe", "bad_json"),
        (b"a", b"42", "bad_json"),
        (b"a", None, "bad_json"),
        (None, b'{"ts": 1, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_asset"),
        (b"a", b'{"asset": 7, "ts": 1, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_asset"),
        (b"\xff", b"[1, 1, 2, 3]", "bad_asset"),
        (b" ", b"[1, 1, 2, 3]", "bad_asset"),
        (None, b'{"asset": "a", "ts": 1, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_asset"),
        (b"a", b'{"asset": "b", "ts": 1, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "asset_mismatch"),
        (b"a", b"[" * 2000 + b"]" * 2000, "bad_json"),  # the standard library's parser recurses
        (b"a", b'{"asset": "a", "ts": ' + b"[" * 5000 + b"]" * 5000 + b"}", "bad_json"),
        (
            b"a",
            b'{"ts": "0001-01-01T00:00:00+01:00", "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}',
            "bad_timestamp",
        ),  # a year-0 time in UTC
        (b"a", b'{"ts": "yesterday", "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_timestamp"),
        (b"a", b'{"values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_timestamp"),
        (b"a", b'{"ts": true, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}', "bad_timestamp"),
        (b"a", b'{"ts": 1, "values": {"Pressure": 1, "Flow": 3}}', "missing_sensor"),
        (b"a", b'{"ts": 1}', "missing_sensor"),
        (b"a", b'{"ts": 1, "values": {"Pressure": "1.0", "Temp": 2, "Flow": 3}}', "non_numeric"),
        (b"a", b'{"ts": 1, "values": {"Pressure": true, "Temp": 2, "Flow": 3}}', "non_numeric"),
        (b"a", b'{"ts": 1, "values": {"Pressure": 1e999, "Temp": 2, "Flow": 3}}', "non_numeric"),
        (b"a", b"[1, 1, 2]", "wrong_length"),
        (b"a", b"[1e300, 1, 2, 3]", "bad_timestamp"),  # beyond what ISO 8601 can write back
        (b"a", b"[1" + b"0" * 400 + b", 1, 2, 3]", "bad_timestamp"),  # an int no float can hold
        (b"a", b"[1, 1" + b"0" * 400 + b", 2, 3]", "non_numeric"),
        (b"a", b'[1, 1, 2, "x"]', "non_numeric"),
    ],
)
def test_unusable_messages_raise_with_a_reason(parser, key, value, reason):
    with pytest.raises(InvalidMessage) as err:
        parser.parse(key, value)
    assert err.value.reason == reason
    assert err.value.reason in REASONS


def test_the_key_names_the_asset_and_a_body_asset_must_agree(parser):
    body = b'{"asset": "pump-7", "ts": 1796013000, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}'
    assert parser.parse(b"pump-7", body).asset == "pump-7"
    nulled = b'{"asset": null, "ts": 1796013000, "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}'
    assert parser.parse(b"pump-7", nulled).asset == "pump-7"
    with pytest.raises(InvalidMessage, match="differs from the key") as err:
        parser.parse(b"pump-8", body)
    assert err.value.reason == "asset_mismatch"


def test_an_allow_list_refuses_every_other_asset():
    parser = ReadingParser(SENSORS, allowed_assets=["pump-*", "compressor-1"])
    value = encode_reading_compact(T0, [1.0, 2.0, 3.0])
    keys = [b"pump-7", b"compressor-1", b"compressor-2", b"1796013000", b"pump-7"]
    batch = parser.parse_batch(keys, [value] * len(keys))
    assert batch.assets == ["pump-7", "compressor-1", "pump-7"]
    assert [(i, e.reason) for i, e in batch.invalid] == [(2, "unknown_asset"), (3, "unknown_asset")]


def test_timestamps_are_written_like_memae_ts_score_writes_them():
    assert format_timestamp(T0) == "2026-11-30T04:30:00Z"
    assert format_timestamp(T0 + 0.25) == "2026-11-30T04:30:00.250000Z"


def test_timestamps_are_formatted_the_same_one_by_one_and_in_bulk():
    ts = np.array([T0, T0 + 0.25, T0 + 1e-6, -5.5, 0.0, 4_102_444_800.0])
    assert format_timestamps(ts) == [format_timestamp(t) for t in ts]
    assert format_timestamps(np.array([T0, T0 + 60])) == ["2026-11-30T04:30:00Z", "2026-11-30T04:31:00Z"]


def test_score_records_json():
    contributions = np.array([[0.2, 0.61234, 0.18766], [0.0, 0.0, 0.0]])
    values = encode_scores(
        ["pump-7", 'odd "name"'], np.array([T0, T0 + 0.5]), np.array([0.5, np.nan]), 0.4,
        contributions, ["Flow", "Temp", "Pressure"], "abc%s123", top_sensors=2,
    )  # fmt: skip
    assert json.loads(values[0]) == {
        "asset": "pump-7",
        "ts": "2026-11-30T04:30:00Z",
        "score": 0.5,
        "normalised_score": 1.25,
        "is_anomaly": True,
        "top_sensors": [{"sensor": "Temp", "share": 0.6123}, {"sensor": "Flow", "share": 0.2}],
        "model_version": "abc%s123",
    }
    second = json.loads(values[1])
    assert second["asset"] == 'odd "name"' and second["ts"] == "2026-11-30T04:30:00.500000Z"
    assert second["score"] is None and second["normalised_score"] is None and second["is_anomaly"] is False
    assert [t["share"] for t in second["top_sensors"]] == [0.0, 0.0]
    assert b'"share":0.6123}' in values[0]  # 4 decimals, not the full float


def test_a_batch_parses_like_its_messages_one_by_one(parser):
    """Good and bad messages interleaved: the batch keeps every good one in place and gives
    each bad one the reason the single-message parse gives."""
    good = [
        (b"p1", encode_reading_object("p1", T0, {"Pressure": 1, "Temp": 2.5, "Flow": None})),
        (b"p2", encode_reading_compact(T0 + 60, [1.0, 2.0, 3.0])),
        (b"p3", b'{"ts": "2026-11-30T04:30:00Z", "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}'),
        (b"p1", b'{"asset": "p1", "ts": 1796013060, "values": {"Pressure": NaN, "Temp": 1, "Flow": 2}}'),
    ]
    bad = [
        (b"a", b"{not json"),
        (b"a", b'{"ts": 1, "values": {"Pressure": "1.0", "Temp": 2, "Flow": 3}}'),
        (b"a", b'{"ts": "yesterday", "values": {"Pressure": 1, "Temp": 2, "Flow": 3}}'),
        (b"a", b'{"ts": 1, "values": {"Pressure": 1e999, "Temp": 2, "Flow": 3}}'),
        (None, b"[1, 1, 2, 3]"),
    ]
    messages = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3], bad[4]]
    batch = parser.parse_batch([k for k, _ in messages], [v for _, v in messages])
    assert batch.index.tolist() == [0, 2, 5, 7]
    assert batch.assets == ["p1", "p2", "p3", "p1"]
    for j, i in enumerate(batch.index):
        one = parser.parse(*messages[i])
        assert one.ts == batch.ts[j]
        np.testing.assert_array_equal(one.values, batch.values[j])
    assert [i for i, _ in batch.invalid] == [1, 3, 4, 6, 8]
    for i, error in batch.invalid:
        with pytest.raises(InvalidMessage) as single:
            parser.parse(*messages[i])
        assert error.reason == single.value.reason


def test_mangled_messages_never_break_a_batch(parser):
    """Byte flips, cuts and odd tokens in valid messages: every message ends up either parsed
    or dead-lettered with a known reason, and the batch itself never raises."""
    rng = np.random.default_rng(5)
    seeds = [
        encode_reading_object("p1", T0, {"Pressure": 1.5, "Temp": -2, "Flow": None}),
        encode_reading_compact("2026-11-30T04:30:00Z", [1.0, 2.0, 3.0]),
    ]
    tokens = [b"1e999", b"1" + b"0" * 400, b"NaN", b"-Infinity", b'"x"', b"true", b"[]", b"{}", b"null"]
    values = []
    for _ in range(400):
        raw = bytearray(seeds[int(rng.integers(len(seeds)))])
        action = int(rng.integers(3))
        pos = int(rng.integers(len(raw)))
        if action == 0:
            raw[pos] = int(rng.integers(256))
        elif action == 1:
            del raw[pos:]
        else:
            raw[pos:pos] = tokens[int(rng.integers(len(tokens)))]
        values.append(bytes(raw))
    batch = parser.parse_batch([b"k"] * len(values), values)
    bad = [i for i, _ in batch.invalid]
    assert sorted(batch.index.tolist() + bad) == list(range(len(values)))
    assert all(error.reason in REASONS for _, error in batch.invalid)
    assert np.isfinite(batch.ts).all() and not np.isinf(batch.values).any()
    assert 0 < len(bad) < len(values)
    assert len(format_timestamps(batch.ts)) == len(batch.index)  # every kept time can be written
