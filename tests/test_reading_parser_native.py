"""The C++ reading parser (memae_ts._runtime.parse_readings, cpp/src/reading_parser.cpp) against
the Python reference (ReadingParser._parse_each) in connectors/messages.py: wherever the C++
parser calls a batch clean, its times and values equal the reference's bit for bit (NaN
positions included); wherever it does not, parse_batch still gives the reference's readings and
dead letters. Messages are generated clean in both forms (ISO and epoch times, nulls, extra and
reordered sensors, unicode) and messy (escapes, odd ISO forms, big, long, halfway and
non-finite numbers, duplicate keys, nesting, wrong types, whitespace)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from memae_ts.connectors import messages
from memae_ts.connectors.messages import ParsedBatch, ReadingParser

from memae_ts import _runtime

ASCII = ["Pressure", "Temp", "Flow"]
UNICODE = ["Druck °C", "温度", "x y", "🌡"]
KEYS = [b"pump-7", "kessel-ü".encode(), b"fan"]


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


def _same(got: ParsedBatch, want: ParsedBatch) -> None:
    assert got.index.tolist() == want.index.tolist()
    assert got.assets == want.assets
    assert got.ts.dtype == want.ts.dtype == np.float64 and _bits(got.ts) == _bits(want.ts)
    assert got.values.dtype == want.values.dtype == np.float64
    assert got.values.shape == want.values.shape and _bits(got.values) == _bits(want.values)
    assert [(i, e.reason, str(e)) for i, e in got.invalid] == [(i, e.reason, str(e)) for i, e in want.invalid]


# ---- generators ---------------------------------------------------------------------------------


def _clean_number(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return repr(rng.uniform(-1e3, 1e3))
    if kind == 1:
        return str(rng.randint(-(2**53), 2**53))
    if kind == 2:
        return repr(rng.lognormvariate(0, 20) * rng.choice([1, -1]))
    if kind == 3:
        return rng.choice(
            ["0", "-0", "0.0", "-0.0", "1E5", "1e-3", "2.5e+300", "5e-324", "0.1", "9007199254740992"]
        )
    if kind == 4:  # digit strings of any length: correctly rounded on both sides
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        return f"{rng.choice(['', '-'])}{rng.randint(1, 9)}.{digits}e{rng.randint(-320, 300)}"
    if kind == 5:  # exactly halfway between two doubles (round half to even)
        x = rng.uniform(1, 10) * 10 ** rng.uniform(-300, 14)  # below 2**52: a midpoint has a fraction
        mid = (Decimal(x) + Decimal(float(np.nextafter(x, np.inf)))) / 2
        return str(mid) if rng.random() < 0.5 else f"{mid:f}"
    return repr(float(np.float32(rng.gauss(0, 1))))


def _iso(rng: random.Random, *, clean: bool) -> str:
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.uniform(-9e9, 9e9) if clean else 0)
    if not clean:
        t = datetime(rng.randint(1, 9999), 1, 1, tzinfo=timezone.utc) + timedelta(
            seconds=rng.uniform(0, 3.2e7)
        )
    text = t.strftime("%Y-%m-%d") + rng.choice("T ") + t.strftime("%H:%M:%S")
    micros = f"{t.microsecond:06d}"
    text += rng.choice(["", "." + micros, "." + micros[:3]])
    text += rng.choice(["", "Z", "z", "+00:00", "-00:00", "+05:30", "-09:45", "+23:59", "-23:59"])
    if not clean:
        mutate = rng.randrange(16)
        fields = {
            0: lambda s: s[:10],
            1: lambda s: s.replace(":", "", 1) if "+" in s[19:] else s + "+0530",
            2: lambda s: s[:19] + "." + micros[: rng.randint(1, 5)] + "Z",
            3: lambda s: s[:19] + "." + micros + "123Z",
            4: lambda s: " " + s,
            5: lambda s: s + "\t",
            6: lambda s: s[:10] + "t" + s[11:],
            7: lambda s: s[:11] + "24:00:00Z",
            8: lambda s: s[:17] + "60Z",
            9: lambda s: f"{rng.choice([2023, 2100, 1900])}-02-29T00:00:00",
            10: lambda s: "2026-04-31T00:00:00Z",
            11: lambda s: "0000-01-01T00:00:00Z",
            12: lambda s: s[:16] + "Z",
            13: lambda s: s[:19] + "+24:00",
            14: lambda s: s[:19] + ",123Z",
            15: lambda s: s + "Z+01:00",
        }
        text = fields[mutate](text)
    return text


def _clean_ts(rng: random.Random) -> object:
    kind = rng.randrange(4)
    if kind == 0:
        return _iso(rng, clean=True)
    if kind == 1:
        return rng.randint(0, 4_000_000_000)
    if kind == 2:
        return rng.uniform(-6e10, 2.5e11)
    return rng.choice([0, -62135596800, 253402300799, 1796013000.5])


class Raw(str):
    """JSON text written as is."""


def _dump(obj: object, rng: random.Random, ws: bool) -> str:
    sp = (lambda: rng.choice(["", " ", "\n", "\t ", "\r\n"])) if ws else (lambda: "")
    if isinstance(obj, Raw):
        return str(obj)
    if isinstance(obj, dict):
        parts = [f"{sp()}{json.dumps(k, ensure_ascii=False)}{sp()}:{sp()}{_dump(v, rng, ws)}{sp()}"
                 for k, v in obj.items()]  # fmt: skip
        return "{" + ",".join(parts) + sp() + "}"
    if isinstance(obj, list):
        return "[" + ",".join(f"{sp()}{_dump(v, rng, ws)}{sp()}" for v in obj) + "]"
    return json.dumps(obj, ensure_ascii=False)


def _ts_text(ts: object) -> Raw:
    return Raw(json.dumps(ts))


def _clean_message(rng: random.Random, sensors: list[str], asset: str) -> bytes:
    ts = _ts_text(_clean_ts(rng))
    values = [Raw("null") if rng.random() < 0.1 else Raw(_clean_number(rng)) for _ in sensors]
    ws = rng.random() < 0.3
    if rng.random() < 0.5:
        return _dump([ts, *values], rng, ws).encode()
    items = list(zip(sensors, values, strict=True))
    if rng.random() < 0.3:
        items.append(("Extra", Raw(_clean_number(rng))))
        items.append(("Note", "ok"))
    if rng.random() < 0.5:
        rng.shuffle(items)
    fields: list[tuple[str, object]] = [("ts", ts), ("values", dict(items))]
    if rng.random() < 0.5:
        fields.append(("asset", rng.choice([asset, None])))
    if rng.random() < 0.2:
        fields.append(("seq", rng.randint(0, 10**6)))
    rng.shuffle(fields)
    return _dump(dict(fields), rng, ws).encode()


_MESSY_NUMBERS = [
    "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "1e", "0x10",
    "1_000",
    "9007199254740993", "-9007199254740993", "18446744073709551616", "123456789012345678901234567890",
    "true", "false", '"1.5"', "[]", "{}", "[1]", '"\\u0031"', "1.0e+", "--1", "- 1",
]  # fmt: skip


def _messy_message(rng: random.Random, sensors: list[str], asset: str) -> bytes:
    base = _clean_message(rng, sensors, asset).decode()
    kind = rng.randrange(14)
    if kind == 0:  # a sensor value replaced
        obj = json.loads(base)
        bad = Raw(rng.choice(_MESSY_NUMBERS))
        if isinstance(obj, list):
            obj = [Raw(json.dumps(v)) for v in obj]
            obj[rng.randrange(1, len(obj))] = bad
        else:
            obj["values"] = {k: Raw(json.dumps(v)) for k, v in obj["values"].items()}
            obj["values"][rng.choice(sensors)] = bad
            obj = {k: v if k == "values" else Raw(json.dumps(v)) for k, v in obj.items()}
        return _dump(obj, rng, False).encode()
    if kind == 1:  # odd time
        ts_text = rng.choice(
            [json.dumps(_iso(rng, clean=False)), rng.choice(_MESSY_NUMBERS), "null", "true", "1e12", "-1e12"]
        )
        values = ",".join(_clean_number(rng) for _ in sensors)
        return f"[{ts_text},{values}]".encode()
    if kind == 2:  # escapes in keys or strings
        return base.replace('"ts"', '"\\u0074s"').replace('"Temp"', '"T\\u0065mp"').encode()
    if kind == 3:  # duplicate keys
        if base.startswith("{"):
            return (
                (base[:-1] + ',"ts":0}').encode()
                if rng.random() < 0.5
                else base.replace('"values":{', '"values":{"Temp":1,', 1).encode()
            )
        return base.encode()
    if kind == 4:  # nesting in an extra field
        return base.replace("{", '{"meta":{"a":[1,{"b":2}]},', 1).encode()
    if kind == 5:  # wrong length / missing sensor
        obj = json.loads(base)
        if isinstance(obj, list):
            obj = obj[:-1] if rng.random() < 0.5 else [*obj, 1]
        else:
            obj["values"].pop(rng.choice(sensors))
        return json.dumps(obj).encode()
    if kind == 6:  # asset mismatch or odd asset
        obj = json.loads(base)
        if isinstance(obj, dict):
            obj["asset"] = rng.choice(["other", "", " ", 7, True, [asset], asset + " "])
        return json.dumps(obj).encode()
    if kind == 7:  # truncation
        return base.encode()[: rng.randrange(len(base))]
    if kind == 8:  # invalid UTF-8 or a control character
        junk = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x01", b"\xe2\x82"])
        raw = base.encode()
        at = raw.find(b'"') + 1
        return raw[:at] + junk + raw[at:]
    if kind == 9:  # trailing garbage, BOM, other whitespace
        return rng.choice([base + "x", "\ufeff" + base, base + "\x0b", "\x0c" + base, base + " ,"]).encode()
    if kind == 10:  # not an object or array
        return rng.choice([b"1", b'"x"', b"null", b"", b"   ", b"[]", b"{}", b"[[]]"])
    if kind == 11:  # values not an object
        obj = json.loads(base)
        if isinstance(obj, dict):
            obj["values"] = rng.choice([None, [1, 2], 3, "x"])
        return json.dumps(obj).encode()
    if kind == 12:  # NaN / Infinity literals the standard library reads
        return base.replace(",", ",NaN,", 1).encode() if base.startswith("[") else base.encode()
    if kind == 13:  # ts missing
        obj = json.loads(base)
        if isinstance(obj, dict):
            obj.pop("ts")
        return json.dumps(obj).encode()
    return base.encode()


def _batch(
    rng: random.Random, sensors: list[str], n: int, messy: float
) -> tuple[list[bytes | None], list[bytes | None]]:
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    for _ in range(n):
        key: bytes | None = rng.choice(KEYS)
        make: Callable[..., bytes] = _messy_message if rng.random() < messy else _clean_message
        values.append(make(rng, sensors, "pump-7" if key is None else key.decode()))
        if rng.random() < messy / 10:  # a key the reference refuses
            key = rng.choice([None, b"", b" ", b"\xff\xfe"])
        keys.append(key)
    return keys, values


# ---- tests --------------------------------------------------------------------------------------


def test_the_module_uses_the_native_parser():
    assert messages._native_readings is _runtime.parse_readings


@pytest.mark.parametrize(("seed", "sensors"), [(1, ASCII), (2, UNICODE), (3, ["only"])])
def test_native_parser_equals_the_reference_message_by_message(seed, sensors):
    """One message a batch: every message judged on its own. Clean ones (in the strict subset
    the generator writes) are all taken natively; wherever native answers, it is bit for bit
    the reference's; messy ones may be refused, never misread."""
    rng = random.Random(seed)
    reference = ReadingParser(sensors)
    taken = {"clean": 0, "messy": 0}
    counts = {"clean": 0, "messy": 0}
    for i in range(4000):
        kind = "messy" if i % 2 else "clean"
        key = rng.choice(KEYS)
        make = _messy_message if kind == "messy" else _clean_message
        value = make(rng, sensors, key.decode())
        want = reference._parse_each([key], [value])
        out = _runtime.parse_readings([value], [key.decode()], sensors)
        counts[kind] += 1
        if out is not None:
            taken[kind] += 1
            assert not want.invalid, (value, want.invalid)
            ts, matrix = out
            assert _bits(ts) == _bits(want.ts), (value, ts, want.ts)
            assert _bits(matrix) == _bits(want.values), (value, matrix, want.values)
        _same(ReadingParser(sensors).parse_batch([key], [value]), want)
    assert taken["clean"] == counts["clean"]  # the generator writes only what native reads
    assert 0 < taken["messy"] < counts["messy"]


@pytest.mark.parametrize("messy", [0.0, 0.02, 0.5])
def test_parse_batch_equals_the_reference_on_whole_batches(messy):
    rng = random.Random(int(messy * 100) + 1)
    native = 0
    for _ in range(150):
        sensors = rng.choice([ASCII, UNICODE])
        keys, values = _batch(rng, sensors, rng.randint(1, 60), messy)
        allowed = rng.choice([(), ("pump-*", "kessel-*")])  # "fan" refused: the reference's dead letters
        got = ReadingParser(sensors, allowed).parse_batch(keys, values)
        _same(got, ReadingParser(sensors, allowed)._parse_each(keys, values))
        if None not in keys and b"\xff\xfe" not in keys:
            native += _runtime.parse_readings(values, [k.decode() for k in keys], sensors) is not None
    if messy == 0.0:
        assert native == 150


def test_native_path_is_taken_for_a_clean_batch(monkeypatch):
    def refuse(*args: object) -> None:
        pytest.fail("a clean batch left the native path")

    rng = random.Random(5)
    keys, values = _batch(rng, ASCII, 200, 0.0)
    want = ReadingParser(ASCII)._parse_each(keys, values)
    monkeypatch.setattr(ReadingParser, "_parse_clean", refuse)
    monkeypatch.setattr(ReadingParser, "_parse_each", refuse)
    got = ReadingParser(ASCII).parse_batch(keys, tuple(values))
    _same(got, want)
    assert got.values.shape == (200, 3) and not got.invalid


def test_a_few_odd_messages_leave_only_themselves_to_the_python_parser(monkeypatch):
    """A poll of 2,000 with dead letters, tombstones, refused keys and escaped strings here and
    there: the native parser reads every other message, only the odd ones reach the Python
    paths, and the result (readings in order, dead letters, reasons) is the reference's."""
    rng = random.Random(9)
    keys, values = _batch(rng, ASCII, 2000, 0.0)
    odd = sorted(rng.sample(range(2000), 12))
    for n, i in enumerate(odd):
        if n % 4 == 0:
            values[i] = b'{"ts": 1, "values": {'  # bad_json
        elif n % 4 == 1:
            values[i] = None  # a tombstone
        elif n % 4 == 2:
            keys[i] = b""  # bad_asset
        else:  # well formed, but an escape native leaves to orjson
            values[i] = json.dumps({"ts": 7.0, "values": dict.fromkeys(ASCII, 1.0), "note": "a\\b"}).encode()
    want = ReadingParser(ASCII)._parse_each(keys, values)
    seen: list[int] = []
    python_paths = ReadingParser._parse_python

    def counted(self, k, v):  # type: ignore[no-untyped-def]
        seen.append(len(v))
        return python_paths(self, k, v)

    monkeypatch.setattr(ReadingParser, "_parse_python", counted)
    got = ReadingParser(ASCII).parse_batch(keys, values)
    _same(got, want)
    assert seen == [12]
    assert len(want.invalid) == 9 and len(got.index) == 1991


def test_native_refuses_what_it_is_not_sure_of():
    s = ["a", "b"]
    refused = [
        b'[1,2,"3"]', b"[1,2]", b"[1,2,3,4]", b'["2026-11-30T04:10:00.1Z",1,2]', b'["2026-11-30T04:10Z",1,2]',
        b"[1,9007199254740993,2]", b"[1,1e400,2]", b"[1,1e-400,2]", b'{"ts":1,"values":{"a":1,"b":2},"ts":2}',
        b'{"ts":1,"values":{"a":1,"b":2,"a":3}}', b'{"ts":1,"values":{"a":1,"b":2},"m":{}}',
        b'{"t\\u0073":1,"values":{"a":1,"b":2}}', b'{"ts":1,"values":{"a":1,"b":2},"asset":"q"}',
        b'{"ts":1,"values":{"a":1}}', b'{"ts":null,"values":{"a":1,"b":2}}', b"[1,NaN,2]", b"[1,true,2]",
        b'["1970-01-01T00:00:00+24:00",1,2]', b'["2255-06-06T00:00:00Z",1,2]', b"[1e12,1,2]",
        b"\xef\xbb\xbf[1,1,2]",
    ]  # fmt: skip
    for value in refused:
        assert _runtime.parse_readings([value], ["p"], s) is None, value
        assert _runtime.parse_readings([b"[1,2,3]", value], ["p", "p"], s) is None, value
    assert _runtime.parse_readings([b"[1,2,3]", None], ["p", "p"], s) is None
    assert _runtime.parse_readings((b"[1,2,3]",), ["p"], s) is None  # a list only
    _, values = _runtime.parse_readings([b' { "values" : { "b" : -0 , "a" : -0.0 } , "ts" : 0 } '], ["p"], s)
    assert _bits(values) == _bits(np.array([[-0.0, 0.0]]))
    with pytest.raises(ValueError):
        _runtime.parse_readings([b"[1,2,3]"], [], s)


def test_native_reads_every_valid_utf8_and_delete_like_the_reference():
    sensors = ["\x7f", "\U0010ffff", "\ufeff", "\u0800"]
    asset = "\uffff-\U00010000"
    value = json.dumps({"asset": asset, "ts": 1.5, "values": dict.fromkeys(sensors, 2.5)}, ensure_ascii=False)
    keys, values = [asset.encode()], [value.encode()]
    assert _runtime.parse_readings(values, [asset], sensors) is not None
    _same(ReadingParser(sensors).parse_batch(keys, values), ReadingParser(sensors)._parse_each(keys, values))


FUZZ_SENSORS = ["Pressure", "Temp", "Flow °C", "x"]  # cpp/fuzz/fuzz_readings.cpp's kSensors


def test_native_equals_the_reference_on_the_fuzz_corpus(tmp_path):
    """Every message of the reading fuzz corpus (its seeds, plus what libFuzzer kept in
    build/fuzz-corpus; scripts/run-ctest.sh): where native answers, the reference agrees."""
    root = Path(__file__).resolve().parent.parent / "build"
    seeder = root / "ctest-release" / "fuzz_readings"
    corpus = root / "fuzz-corpus" / "fuzz_readings"
    files: list[Path] = sorted(corpus.iterdir()) if corpus.is_dir() else []
    if seeder.is_file():
        subprocess.run(
            [str(seeder), "--write-seeds", str(tmp_path)], check=True, capture_output=True, timeout=60
        )
        files += sorted(tmp_path.iterdir())
    if not files:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{seeder} is missing: scripts/run-ctest.sh builds it (make ctest)")
        pytest.skip(f"{seeder} is missing (make ctest builds it)")
    taken = 0
    for path in files:
        data = path.read_bytes()
        if not data or data[0] & 1:  # odd: the target's structured mode, not a message
            continue
        sensors = FUZZ_SENSORS[: 1 + (data[0] >> 1) % 4]
        value = data[1:]
        out = _runtime.parse_readings([value], ["pump-7"], sensors)
        want = ReadingParser(sensors)._parse_each([b"pump-7"], [value])
        if out is not None:
            taken += 1
            assert not want.invalid, (value, want.invalid)
            assert _bits(out[0]) == _bits(want.ts) and _bits(out[1]) == _bits(want.values), value
        _same(ReadingParser(sensors).parse_batch([b"pump-7"], [value]), want)
    assert taken > 0
