"""The daemon's fast paths against their references, on messy batches.

ReadingParser.parse_batch takes a clean batch through C-implemented callables
(``_parse_clean``) and any other through the message-by-message loop (``_parse_each``, the
reference); the processor groups readings by asset with one stable sort. Each must give exactly
what the reference gives: the same usable readings, values, times, and every dead letter with
the same reason and detail, in the same order."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from memae_ts.connectors.messages import ReadingParser
from memae_ts.connectors.processor import _group

SENSORS = ["flow", "pressure", "temp"]
ASSETS = ["pump-1", "pump-2", "Kühler-ø3", "泵-4", "ventil 5"]


def _good(rng: random.Random, asset: str, t: float) -> bytes:
    values = [None if rng.random() < 0.1 else round(rng.gauss(10, 3), 4) for _ in SENSORS]
    if rng.random() < 0.3:
        values = [int(v) if v is not None and rng.random() < 0.5 else v for v in values]
    if rng.random() < 0.5:
        ts: object = t if rng.random() < 0.5 else int(t)
        return json.dumps([ts, *values]).encode()
    iso = np.datetime_as_string(np.datetime64(int(t * 1e6), "us"), unit="s") + "Z"
    body: dict = {"ts": iso if rng.random() < 0.7 else t, "values": dict(zip(SENSORS, values, strict=True))}
    if rng.random() < 0.5:
        body["asset"] = asset
    if rng.random() < 0.2:
        body["values"]["extra"] = "ignored"
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()


# Each turns a good message into one a producer bug could send.
def _messy(rng: random.Random, asset: str, t: float) -> tuple[bytes | None, bytes | None]:
    key: bytes | None = asset.encode()
    kind = rng.randrange(20)
    if kind == 0:
        return key, None  # tombstone
    if kind == 1:
        return None, _good(rng, asset, t)  # no key
    if kind == 2:
        return b"\xff\xfe", _good(rng, asset, t)  # key not UTF-8
    if kind == 3:
        return b"  ", _good(rng, asset, t)  # blank key
    if kind == 4:
        return key, b'[%r, NaN, 1.0, 2.0]' % t  # NaN literal: orjson refuses, json reads a missing value
    if kind == 5:
        return key, b"[%r, 1e999, 1.0, 2.0]" % t  # beyond the float range
    if kind == 6:
        return key, b"[%r, %d, 1.0, 2.0]" % (t, 10**400)  # a huge integer
    if kind == 7:
        # duplicate keys
        return key, b'{"ts": %r, "values": {"flow": 1, "flow": 2, "pressure": 3, "temp": 4}}' % t
    if kind == 8:
        return key, b'[%r, "1.0", 1.0, 2.0]' % t  # a string value
    if kind == 9:
        return key, b"[%r, true, 1.0, 2.0]" % t  # a boolean value
    if kind == 10:
        return key, b"[%r, 1.0, 2.0]" % t  # wrong length
    if kind == 11:
        return key, b'{"ts": %r, "values": {"flow": 1, "pressure": 2}}' % t  # a sensor missing
    if kind == 12:
        return key, json.dumps({"asset": "other", "ts": t, "values": dict.fromkeys(SENSORS, 1)}).encode()
    if kind == 13:
        return key, b'{"ts": "yesterday", "values": {"flow": 1, "pressure": 2, "temp": 3}}'  # bad time
    if kind == 14:
        return key, b'[1e300, 1.0, 2.0, 3.0]'  # epoch beyond the year 9999
    if kind == 15:
        return key, b'"just a string"'
    if kind == 16:
        return key, b'{"ts": %r, "values": [1, 2, 3]}' % t  # values not an object
    if kind == 17:
        return key, b"{" * 5000  # unreadable
    if kind == 18:
        return key, json.dumps({"asset": 7, "ts": t, "values": dict.fromkeys(SENSORS, 1)}).encode()
    return key, b'[%r, null, null, null]' % t  # all missing: a usable reading


def _batch(rng: random.Random, n: int, messy: float) -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    t = 1_796_000_000.0
    for _ in range(n):
        t += rng.choice([0.0, 1.0, 60.0, 0.25])
        asset = rng.choice(ASSETS)
        if rng.random() < messy:
            key, value = _messy(rng, asset, t)
        else:
            key, value = asset.encode(), _good(rng, asset, t)
        keys.append(key)
        values.append(value)
    return keys, values


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_array_equal(a.index, b.index)
    assert a.assets == b.assets
    np.testing.assert_array_equal(a.ts, b.ts)  # NaN equal to NaN
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.dtype == b.values.dtype == np.float64
    assert [(i, e.reason, e.detail) for i, e in a.invalid] == [(i, e.reason, e.detail) for i, e in b.invalid]


@pytest.mark.parametrize("messy", [0.0, 0.02, 0.3, 1.0])
def test_parse_batch_gives_what_the_reference_gives(messy: float) -> None:
    rng = random.Random(int(messy * 100))
    fast = ReadingParser(SENSORS, allowed_assets=("pump-*", "Kühler-*", "泵-4"))
    reference = ReadingParser(SENSORS, allowed_assets=("pump-*", "Kühler-*", "泵-4"))
    for _ in range(30):
        keys, values = _batch(rng, rng.choice([1, 2, 7, 64, 300]), messy)
        _same(fast.parse_batch(keys, values), reference._parse_each(keys, values))


def test_the_fast_path_takes_clean_batches_and_only_them() -> None:
    """Not vacuous: a clean batch is answered by the fast path, with the reference's result;
    one bad message anywhere sends the whole batch to the reference."""
    rng = random.Random(5)
    parser = ReadingParser(SENSORS)
    keys, values = _batch(rng, 500, 0.0)
    clean = parser._parse_clean(keys, values)
    assert clean is not None and len(clean.index) == 500 and not clean.invalid
    _same(clean, parser._parse_each(keys, values))
    for bad in ([None], [b"{"], [b'[1, NaN, 1, 2]'], [b'[1, 1, 2]'], [b'{"ts": 1, "values": {}}']):
        assert parser._parse_clean([*keys, b"pump-1"], [*values, *bad]) is None
    assert parser._parse_clean([*keys, None], [*values, values[0]]) is None  # no key


def test_times_and_numbers_are_checked_on_the_fast_path_too() -> None:
    """Well-formed messages with an unusable time or number: the fast path keeps its result
    and dead-letters them exactly as the reference does."""
    parser = ReadingParser(SENSORS)
    keys = [b"pump-1"] * 6
    values = [
        b"[1796000000, 1, 2, 3]",
        b'[1e300, 1, 2, 3]',
        b'{"ts": "2026-12-02T06:00:00+01:00", "values": {"flow": 1, "pressure": 2, "temp": 3}}',
        b'{"ts": "not a time", "values": {"flow": 1, "pressure": 2, "temp": 3}}',
        b"[1796000001, %d, 2, 3]" % 2**63,  # beyond int64 (orjson refuses more than 64 bits)
        b"[1796000002, 1.5, null, 3]",
    ]
    fast = parser._parse_clean(keys, values)
    assert fast is not None
    _same(fast, parser._parse_each(keys, values))
    assert [e.reason for _, e in fast.invalid] == ["bad_timestamp", "bad_timestamp"]
    assert fast.index.tolist() == [0, 2, 4, 5]


def test_grouping_by_asset_keeps_first_appearance_and_arrival_order() -> None:
    rng = random.Random(1)
    for n in (0, 1, 2, 50, 1000):
        assets = [rng.choice(ASSETS) for _ in range(n)]
        expected: dict[str, list[int]] = {}
        for j, a in enumerate(assets):
            expected.setdefault(a, []).append(j)
        got = _group(assets)
        assert list(got) == list(expected)
        assert {a: v.tolist() for a, v in got.items()} == expected
        assert all(v.dtype == np.int64 for v in got.values())


@pytest.mark.parametrize("seed", range(3))
def test_one_bad_message_in_a_clean_batch(seed: int) -> None:
    """Every kind of fault alone in an otherwise clean batch (the case the fast path must not
    get wrong): the same result as the reference, the fault dead-lettered with its reason."""
    rng = random.Random(seed)
    parser = ReadingParser(SENSORS)
    reference = ReadingParser(SENSORS)
    for _ in range(60):
        keys, values = _batch(rng, 40, 0.0)
        at = rng.randrange(len(keys) + 1)
        key, value = _messy(rng, rng.choice(ASSETS), 1_796_000_000.0)
        keys.insert(at, key)
        values.insert(at, value)
        _same(parser.parse_batch(keys, values), reference._parse_each(keys, values))


def _poll(seed: int) -> list:
    from test_edge_processor import Msg

    rng = random.Random(seed)
    out, t = [], 0
    offsets = {0: 0, 1: 0}
    for _ in range(240):
        asset = rng.choice(["a", "b", "c", "Kühler"])
        p = 0 if asset in ("a", "c") else 1
        t += rng.choice([60, 60, 60, 600])  # now and then a gap: a new stretch
        second = None if rng.random() < 0.05 else rng.gauss(2, 0.1)  # now and then a missing value
        value = json.dumps([t, rng.gauss(1, 0.2), second]).encode()
        if rng.random() < 0.03:
            value = b"{"
        out.append(Msg(p, offsets[p], asset.encode(), value, timestamp=t))
        offsets[p] += 1
    return out


@pytest.mark.parametrize("hop", [1, 3])
def test_slices_of_whole_assets_change_no_record_dead_letter_or_commit(hop: int) -> None:
    """The same poll through slices of 2 readings and through one slice: per asset the same
    score records, and the same dead letters and commits. With slices of 2 every asset is cut
    into pieces, with 1,000 each is windowed once."""
    from test_edge_processor import make

    results = []
    for chunk in (2, 1000):
        proc, source, sink = make(window=3)
        proc.config.score_chunk = chunk
        proc.config.hop = hop
        for lane in proc.lanes:  # the hop counts in the model's sampling period
            lane.model.period_seconds = 60.0
            lane.install(lane.model)
        stream = _poll(7)
        source.batches = [stream[:120], stream[120:]]
        proc.step()
        proc.step()
        by_asset: dict[str, list] = {}
        for record in sink.published:
            by_asset.setdefault(record["asset"], []).append(record)
        publishes = sum(entry.startswith("publish") for entry in sink.log)
        results.append((by_asset, sink.dead, source.commits, publishes))
    (small, dead_small, commits_small, calls_small), (whole, dead_whole, commits_whole, calls_whole) = results
    assert small == whole and sum(map(len, whole.values())) > 20
    assert dead_small == dead_whole and len(dead_whole) >= 2
    assert commits_small == commits_whole
    assert calls_whole == 2 < calls_small  # one engine call per poll when everything fits a slice


def test_no_garbage_collection_while_a_poll_is_processed() -> None:
    """Parsing a poll creates containers per reading, which used to set off collections (some
    of the whole heap) every few hundred readings; now at most the one due after the poll
    runs, and the collector's state is what it was."""
    import gc

    from test_edge_processor import make

    proc, source, _ = make(window=3)
    stream = _poll(11)  # 240 readings
    big = []
    for k in range(12):  # 2,880 readings of the same four assets, time moving on
        for m in stream:
            body = json.loads(m.value) if m.value != b"{" else None
            value = m.value if body is None else json.dumps([body[0] + k * 10**6, *body[1:]]).encode()
            big.append(type(m)(m.partition, len(big), m.key, value, timestamp=m.timestamp))
    source.batches = [big]
    runs: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        proc.step()
        assert gc.isenabled()
        gc.disable()
        source.batches = [big[:10]]
        proc.step()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.callbacks.remove(count)
    assert len(runs) <= 1, runs


def test_a_refused_transaction_commits_nothing_from_its_revocation() -> None:
    """The exactly-once source answers a refused commit by revoking (and rebuilding) its
    partitions from inside checkpoint: the score records of that transaction are gone, so the
    revocation must not checkpoint again and commit their offsets (the exactly-once chaos test
    lost three windows that way)."""
    from test_edge_processor import make, reading

    proc, source, _ = make(window=2)

    class Refusing(type(source)):  # type: ignore[misc]
        transactional = True

        def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
            self.log.append("commit")
            if self.commit_results.pop(0):
                self.commits.append(dict(next_offsets))
                return True
            proc._on_revoked(set(self.assigned))  # as TransactionalSource.commit does
            return False

    refusing = Refusing(source.log, commit_results=[False, True])
    proc.source = refusing
    refusing.batches = [[reading(0, 0, 0), reading(0, 1, 60)]]
    proc.step()
    assert refusing.commits == [] and refusing.log.count("commit") == 1
