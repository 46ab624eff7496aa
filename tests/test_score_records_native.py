"""The C++ score record writer (memae_ts._runtime.encode_score_records) against the Python
reference in connectors/messages.py: the same bytes for every record, on messy columns (NaN and
infinite scores, tiny and huge numbers, unicode and quote-laden names, negative modes, times
before 1970 and with microseconds), and the Python writer taking over where the C++ one does
not apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
from memae_ts.connectors import messages
from memae_ts.connectors.messages import encode_scores

from memae_ts import _runtime

SENSORS = ["flow", 'pres"sure', "Temperatur °C", "振动", "back\\slash", "pct%s"]


def _columns(rng: np.random.Generator, n: int) -> dict:
    bits = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True).view(np.float64)
    pool = np.concatenate(
        [
            rng.lognormal(0, 3, n),
            rng.normal(size=n) * 1e-6,
            bits,
            [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, 1.0],
        ]
    )
    scores = rng.choice(pool, n)
    contributions = np.abs(rng.choice(pool, (n, len(SENSORS))))
    contributions[rng.random((n, len(SENSORS))) < 0.1] = np.nan
    contributions[: n // 10] = 0.0  # no error at all: shares of a zero total
    ts = [
        1.7964e9 + rng.integers(0, 10**6, n).astype(np.float64),
        1.7964e9 + rng.random(n) * 1e5,  # with microseconds
        rng.uniform(messages.EPOCH_MIN, messages.EPOCH_MAX, n).round(),
        -rng.random(n) * 1e9,  # before 1970
    ][rng.integers(4)]
    return {
        "assets": [rng.choice(["pump-1", "Kühler ø", 'quote"d', "泵-4", "a\\b", "100%"]) for _ in range(n)],
        "ts": ts,
        "scores": scores,
        "threshold": float(rng.choice([0.5, 1.0, 3.7e-3, 1e300])),
        "contributions": contributions,
        "sensors": SENSORS,
        "model_version": rng.choice(["v1", 'v"%s', "2026-12-02T06:00:00Z/ø"]),
        "top_sensors": int(rng.integers(0, 8)),
        "model_name": rng.choice([None, "default", "Anlage 3 %d"]),
    }


def _optional(rng: np.random.Generator, n: int) -> dict:
    out: dict = {}
    if rng.random() < 0.5:
        out["modes"] = rng.integers(-1, 12, n)
        out["novelty"] = rng.choice([0.5, np.nan, 1.25, 1e-7, np.inf], n)
        out["alarm_level"] = rng.choice([0.0, 1.0, 0.99, np.nan], n)
    if rng.random() < 0.5:
        out["alarm"] = rng.random(n) < 0.3
    if rng.random() < 0.5:
        out["tail_probability"] = rng.choice([0.5, 1e-5, 0.0001, 1.0, np.nan, 3e-12], n)
    return out


def _both(kwargs: dict) -> tuple[list[bytes], list[bytes]]:
    with np.errstate(all="ignore"):
        return encode_scores(**kwargs, native=True), encode_scores(**kwargs, native=False)


@pytest.mark.parametrize("seed", range(6))
def test_the_cpp_writer_writes_the_reference_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n = int(rng.choice([1, 2, 3, 17, 256]))
        kwargs = {**_columns(rng, n), **_optional(rng, n)}
        native, reference = _both(kwargs)
        assert native == reference
        for record in native[:3]:
            json.loads(record)  # and it is JSON (null, never NaN)


def test_the_cpp_writer_is_the_one_used() -> None:
    """Not vacuous: the daemon's encode_scores goes through the C++ writer (a record it writes
    differs from what a broken Python path would give) and the C++ writer formats by itself."""
    assert messages._native_records is _runtime.encode_score_records
    out = _runtime.encode_score_records(
        ['"p"'], np.array([1_500_000], dtype=np.int64), np.array([1e-5]), np.array([2e16 + 8]),
        np.array([True]), np.array([[1]], dtype=np.int64), np.array([[0.12345]]), ['"a"', '"b"'],
        ',"model_version":"v"', np.array([-1], dtype=np.int64), np.array([np.nan]), np.array([False]),
        np.array([np.inf]),
    )  # fmt: skip
    assert out == [
        b'{"asset":"p","ts":"1970-01-01T00:00:01.500000Z","score":1e-05,"normalised_score":2.000000000000001e+16,'
        b'"is_anomaly":true,"top_sensors":[{"sensor":"b","share":0.1235}],"model_version":"v","mode":null,'
        b'"novelty_score":null,"alarm":false,"tail_probability":null}'
    ]


def test_where_the_cpp_writer_does_not_apply_the_python_one_writes() -> None:
    """Times beyond the years 1-9999 (and NaN) and modes that are not integers."""
    rng = np.random.default_rng(3)
    kwargs = _columns(rng, 4)
    kwargs["ts"] = np.array([1.7e9, messages.EPOCH_MAX + 86400 * 400, 1.7e9, 1.7e9])
    native, reference = _both(kwargs)
    assert native == reference and b'"ts":"10001-' in native[1]
    kwargs = {**_columns(rng, 3), "modes": np.array([1.0, np.nan, 2.0]), "novelty": np.ones(3)}
    native, reference = _both(kwargs)
    assert native == reference and b'"mode":null' in native[1]


def test_bad_columns_are_refused_not_read_out_of_bounds() -> None:
    one = np.zeros(1)
    ok = (['"p"'], np.zeros(1, dtype=np.int64), one, one, np.zeros(1, bool))
    with pytest.raises(ValueError, match="out of range"):
        _runtime.encode_score_records(*ok, np.array([[2]], dtype=np.int64), np.zeros((1, 1)), ['"a"'], "")
    with pytest.raises(ValueError, match="length"):
        _runtime.encode_score_records(['"p"', '"q"'], *ok[1:], np.zeros((1, 0), dtype=np.int64),
                                      np.zeros((1, 0)), [], "")  # fmt: skip
    with pytest.raises(ValueError, match="years"):
        _runtime.encode_score_records(['"p"'], np.array([2**62], dtype=np.int64), *ok[2:],
                                      np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0)), [], "")  # fmt: skip
    with pytest.raises(TypeError):
        _runtime.encode_score_records([b"p"], *ok[1:], np.zeros((1, 0), dtype=np.int64),
                                      np.zeros((1, 0)), [], "")  # fmt: skip


def test_encode_scores_is_unchanged_for_the_daemon() -> None:
    """The public function (the daemon's) gives the reference bytes too."""
    rng = np.random.default_rng(9)
    kwargs = {**_columns(rng, 64), **_optional(rng, 64)}
    native, reference = _both(kwargs)
    with np.errstate(all="ignore"):
        assert encode_scores(**kwargs) == reference == native
