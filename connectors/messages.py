"""The Kafka message contract of the edge daemon: readings in, score records out.

Readings are one message per row, key = asset id (so one asset stays in one partition and in
order). Two value forms are accepted:

* JSON object: ``{"asset": "pump-7", "ts": "2026-11-30T04:10:00Z", "values": {"Pressure": 1.02}}``;
  ``asset`` may be left out; extra sensors are ignored.
* compact JSON array in the bundle's sensor order: ``[ts, v0, v1, ...]``.

Why the key, and only the key, names the asset: Kafka places a message by its key, and the
daemon's windows and rebuild points rely on one asset living in one partition, in order. A
message without a key lands on any partition, and a body ``asset`` that differs from the key
would put one asset's readings on two partitions (each daemon owning a piece of its window, a
rebuild point covering neither). So a message needs a key (``bad_asset``), and a body ``asset``,
when given, must equal it (``asset_mismatch``). An optional allow-list of asset names or shell
patterns refuses every other key (``unknown_asset``): a producer bug then costs dead letters,
not windows and metric series.

``ts`` is ISO 8601 (a zone-less time is UTC) or Unix epoch seconds. A sensor value of ``null``
is a missing value (forward-filled like offline scoring does); a sensor that is absent or not
a number makes the message invalid. Every invalid message raises :class:`InvalidMessage`
carrying a short machine-readable reason that ends up in the dead-letter header and in the
``memae_ts_invalid_messages_total{reason}`` metric.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np
import orjson

# Reasons are a closed set so the metric label stays low-cardinality.
REASONS = (
    "bad_json",
    "bad_asset",
    "bad_timestamp",
    "missing_sensor",
    "non_numeric",
    "wrong_length",
    "time_backwards",
    "asset_mismatch",
    "unknown_asset",
    "no_model",  # the asset is in no [[model]] section's assets
    "model_unavailable",  # its [[model]]'s bundle could not be loaded (docs/edge.md)
)


class InvalidMessage(ValueError):
    """A message that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reading:
    """One parsed sensor row: ``values`` is float64 in the bundle's sensor order (NaN = missing)."""

    asset: str
    ts: float  # Unix epoch seconds
    values: np.ndarray


# Epoch seconds of 0001-01-01 and 9999-12-31T23:59:59Z: what ISO 8601 can write back.
EPOCH_MIN, EPOCH_MAX = -62_135_596_800.0, 253_402_300_799.0


def parse_timestamp(raw: Any) -> float:
    """ISO 8601 string or epoch seconds -> epoch seconds (UTC), within the years 1-9999 whatever
    the form (an ISO time with an offset can fall just outside them)."""
    if isinstance(raw, bool):
        raise InvalidMessage("bad_timestamp", f"not a timestamp: {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if not EPOCH_MIN <= value <= EPOCH_MAX:  # also NaN and infinity
            raise _epoch_out_of_range(raw)
        return value
    if isinstance(raw, str):
        text = raw.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidMessage("bad_timestamp", f"not ISO 8601: {raw[:64]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp()
        if not EPOCH_MIN <= value <= EPOCH_MAX:
            raise InvalidMessage("bad_timestamp", f"outside the years 1-9999 in UTC: {raw[:64]!r}")
        return value
    raise InvalidMessage("bad_timestamp", f"missing or not a timestamp: {raw!r}"[:120])


def _epoch_out_of_range(raw: float) -> InvalidMessage:
    return InvalidMessage("bad_timestamp", f"epoch seconds outside the years 1-9999: {raw!r}"[:120])


def format_timestamp(ts: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with ``Z``, as ``memae-ts score`` writes it (microseconds
    only when present)."""
    return format_timestamps(np.array([ts]))[0]


def _number(sensor: str, raw: Any) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidMessage("non_numeric", f"sensor {sensor!r} is {raw!r}"[:120])
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if math.isinf(value):
        raise InvalidMessage("non_numeric", f"sensor {sensor!r} is beyond the float range")
    return value


def _key_name(key: bytes | None) -> str:
    """The asset a key names (see the module docstring: the key is the asset's identity)."""
    if not key:
        raise InvalidMessage(
            "bad_asset", "no message key: produce every reading with its asset id as the key"
        )
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("bad_asset", "message key is not UTF-8") from None
    if not name.strip():
        raise InvalidMessage("bad_asset", "the message key is blank")
    return name


def key_asset(key: bytes | None, allowed_assets: Sequence[str] = ()) -> str:
    """The asset a message key names, if ``allowed_assets`` (names or shell patterns; empty:
    all) admits it; else :class:`InvalidMessage` (``bad_asset``, ``unknown_asset``)."""
    name = _key_name(key)
    if allowed_assets and not any(fnmatch.fnmatchcase(name, p) for p in allowed_assets):
        raise InvalidMessage("unknown_asset", f"asset {name!r} is not in processing.assets"[:200])
    return name


def _check_body_asset(key_asset: str, body_asset: Any) -> None:
    if type(body_asset) is not str or not body_asset.strip():
        raise InvalidMessage("bad_asset", f"asset must be a non-empty string: {body_asset!r}"[:120])
    if body_asset != key_asset:
        raise InvalidMessage(
            "asset_mismatch", f"body asset {body_asset!r} differs from the key {key_asset!r}"[:200]
        )


def _loads_lenient(value: bytes) -> Any:
    """What orjson refuses, the standard library decides: it also reads numbers beyond the
    float range (as infinity: ``non_numeric``) and ``NaN`` (a missing value). Its parser is
    recursive: a few KB of nested brackets raise RecursionError, which must be a dead letter
    like any other unreadable message (orjson itself stops at 1024 levels)."""
    try:
        return json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage("bad_json", str(exc)[:120]) from None
    except RecursionError:
        raise InvalidMessage("bad_json", "nested too deeply") from None


# Value types that go straight into a float64 array (None becomes NaN = missing).
_PLAIN = frozenset({float, int, type(None)})
_EPOCH = frozenset({float, int})
# The compact form [ts, v0, v1, ...]: its time and its values.
_FIRST = operator.itemgetter(0)
_REST = operator.itemgetter(slice(1, None))


@dataclass(slots=True)
class ParsedBatch:
    """The usable readings of a batch as arrays, plus what was wrong with the others.

    ``index[j]`` is the position in the input of the j-th usable reading; ``values`` is float64
    in the bundle's sensor order (NaN = missing); ``invalid`` lists (input position, error).
    """

    index: np.ndarray
    assets: list[str]
    ts: np.ndarray
    values: np.ndarray
    invalid: list[tuple[int, InvalidMessage]]


class ReadingParser:
    """Turns raw Kafka key/value bytes into readings for one bundle's sensor list.

    Why batches: at stream rates the per-message Python work is the daemon's budget, so the
    checks run once over a whole poll (one type scan, one array conversion) and only messages
    that fail them take the slow path that finds out exactly what is wrong.

    ``allowed_assets``: asset names or shell patterns (``pump-*``); empty allows every asset.
    """

    # Keys seen, with their asset or why they are refused; cleared when it grows past this
    # (a producer bug sending a new key per message must not grow it without bound).
    _KEY_CACHE = 100_000

    def __init__(self, sensors: list[str], allowed_assets: Sequence[str] = ()) -> None:
        self.sensors = list(sensors)
        self.allowed_assets = tuple(allowed_assets)
        self._keys: dict[bytes | None, str | InvalidMessage] = {}
        if len(self.sensors) == 1:
            only = self.sensors[0]
            self._pick: Any = lambda values: (values[only],)
        else:
            self._pick = operator.itemgetter(*self.sensors)

    def parse(self, key: bytes | None, value: bytes | None) -> Reading:
        """One message; raises :class:`InvalidMessage` when it cannot be used."""
        batch = self.parse_batch([key], [value])
        if batch.invalid:
            raise batch.invalid[0][1]
        return Reading(batch.assets[0], float(batch.ts[0]), batch.values[0])

    def parse_batch(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> ParsedBatch:
        """The usable readings of a batch and why the others are not.

        Why several paths: at stream rates a Python loop per message is most of the daemon's
        CPU. With the extension, :meth:`_parse_native` (C++, a strict subset of the contract)
        reads every message it is sure of and hands only the others on. :meth:`_parse_clean`
        takes a batch in which every message is well formed through C-implemented callables
        (``map`` of orjson, dict lookups, ``itemgetter``) and gives up at the first sign of a
        problem; the message-by-message loop (:meth:`_parse_each`, the reference) then parses
        that batch again and finds out exactly what is wrong."""
        if len(self._keys) > self._KEY_CACHE:
            self._keys = {}
        if len(keys) != len(values):
            raise ValueError("keys and values differ in length")
        if _native_readings is not None:
            try:
                native = self._parse_native(keys, values)
            except Exception:  # whatever it is, the Python paths decide
                native = None
            if native is not None:
                return native
        return self._parse_python(keys, values)

    def _parse_python(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> ParsedBatch:
        """:meth:`_parse_clean`, or the reference when it gives up."""
        try:
            fast = self._parse_clean(keys, values)
        except Exception:  # whatever it is, the reference path says which message and why
            fast = None
        return fast if fast is not None else self._parse_each(keys, values)

    def _parse_native(
        self, keys: Sequence[bytes | None], values: Sequence[bytes | None]
    ) -> ParsedBatch | None:
        """:meth:`_parse_each`'s result, the messages the C++ parser (cpp/src/reading_parser.cpp,
        ``memae_ts._runtime.parse_readings``) reads as certainly clean read there and the others
        (a refused key, a tombstone, anything it is not sure of) by :meth:`_parse_python`; None
        when it reads none of them.

        Why: orjson and the checks of :meth:`_parse_clean` and :meth:`_convert` cost about 3 us a
        reading. The C++ parser accepts only a strict subset of the contract (no escapes, ISO
        times in the forms every Python reads alike, integers up to 2**53, ...) and gives up on
        anything else, so where it answers it answers bit for bit as the reference
        (tests/test_reading_parser_native.py, cpp/fuzz/fuzz_readings.cpp). Per message, not per
        batch: a dead letter now and then (0.5 % of a plant's messages) sent every batch of
        thousands to the reference loop (~2.7 us a message)."""
        n = len(values)
        if n == 0:
            return None
        names = self._key_names(keys)
        usable = [type(name) is str for name in names]
        assets = names if all(usable) else [name if type(name) is str else "" for name in names]
        assert _native_readings is not None
        ts, matrix, clean = _native_readings(
            values if type(values) is list else list(values), assets, self.sensors, True
        )
        if not all(usable):
            clean &= np.array(usable)
        read = np.flatnonzero(clean)
        if len(read) == n:
            return ParsedBatch(np.arange(n, dtype=np.int64), assets, ts, matrix, [])
        if len(read) == 0:
            return None
        rest = np.flatnonzero(~clean)
        other = self._parse_python([keys[i] for i in rest], [values[i] for i in rest])
        index = np.concatenate([read, rest[other.index]])
        order = np.argsort(index, kind="stable")
        merged_assets = [assets[i] for i in read.tolist()] + other.assets
        other_values = np.asarray(other.values, dtype=np.float64).reshape(-1, len(self.sensors))
        return ParsedBatch(
            index[order],
            [merged_assets[j] for j in order.tolist()],
            np.concatenate([ts[read], np.asarray(other.ts, dtype=np.float64)])[order],
            np.concatenate([matrix[read], other_values])[order],
            [(int(rest[i]), error) for i, error in other.invalid],
        )

    def _key_names(self, keys: Sequence[bytes | None]) -> list[str | InvalidMessage]:
        """Every key's asset, or why it is refused (each distinct new key looked at once, cached)."""
        cache = self._keys
        names: list[Any] = list(map(cache.get, keys))
        if None in names:  # keys not seen yet
            for key in dict.fromkeys(itertools.compress(keys, [name is None for name in names])):
                try:
                    self._key_asset(key, cache)
                except InvalidMessage:
                    pass  # cached
            names = list(map(cache.get, keys))
        return names

    def _clean_names(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> list[str] | None:
        """The asset of every key, or None when a batch is empty, has a tombstone or a refused key."""
        if len(values) == 0 or None in values:  # a tombstone
            return None
        names = self._key_names(keys)
        if set(map(type, names)) != {str}:  # a key refused
            return None
        return cast(list[str], names)

    def _parse_clean(
        self, keys: Sequence[bytes | None], values: Sequence[bytes | None]
    ) -> ParsedBatch | None:
        """:meth:`_parse_each`'s result for a batch whose messages all have a known, usable key
        and a well-formed body in one of the two forms; None for any other batch (what remains
        to check, the timestamps and numbers, is checked by :meth:`_convert` for both paths)."""
        names = self._clean_names(keys, values)
        if names is None:
            return None
        n = len(values)
        try:
            bodies = list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            return None
        kinds = set(map(type, bodies))
        if kinds == {dict}:
            fields = self._object_fields(bodies, names)
        elif kinds == {list}:
            fields = self._compact_fields(bodies)
        elif kinds == {dict, list}:  # producers of both forms: each part on its own, then merged
            objects = [type(body) is dict for body in bodies]
            part = self._object_fields(
                list(itertools.compress(bodies, objects)), list(itertools.compress(names, objects))
            )
            other = self._compact_fields([body for body in bodies if type(body) is list])
            if part is None or other is None:
                return None
            of_objects, of_compact = zip(*part, strict=True), zip(*other, strict=True)
            merged = [next(of_objects) if o else next(of_compact) for o in objects]
            fields = [t for t, _ in merged], [row for _, row in merged]
        else:
            return None
        if fields is None:
            return None
        raw_ts, rows = fields
        invalid: list[tuple[int, InvalidMessage]] = []
        index = list(range(n))
        keep, ts_array, matrix = self._convert(raw_ts, rows, index, invalid)
        if keep is None:
            return ParsedBatch(np.arange(n, dtype=np.int64), names, ts_array, matrix, invalid)
        invalid.sort(key=lambda item: item[0])
        return ParsedBatch(
            np.flatnonzero(keep).astype(np.int64),
            list(itertools.compress(names, keep.tolist())),
            ts_array[keep],
            matrix[keep],
            invalid,
        )

    def _object_fields(self, bodies: list[dict], names: list[str]) -> tuple[list[Any], list[Any]] | None:
        """Times and sensor rows of JSON objects, or None when one needs the reference path."""
        body_assets = list(map(dict.get, bodies, itertools.repeat("asset")))
        if body_assets != names and any(
            b is not None and b != a for b, a in zip(body_assets, names, strict=True)
        ):
            return None
        sensor_values = list(map(dict.get, bodies, itertools.repeat("values")))
        if sensor_values and set(map(type, sensor_values)) != {dict}:
            return None
        try:
            rows = list(map(self._pick, sensor_values))
        except KeyError:
            return None
        return list(map(dict.get, bodies, itertools.repeat("ts"))), rows

    def _compact_fields(self, bodies: list[list]) -> tuple[list[Any], list[Any]] | None:
        """Times and sensor rows of compact arrays, or None when one has the wrong length."""
        if bodies and set(map(len, bodies)) != {len(self.sensors) + 1}:
            return None
        return list(map(_FIRST, bodies)), list(map(_REST, bodies))

    def _parse_each(self, keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> ParsedBatch:
        """The reference: one message at a time, every check with its own reason."""
        n_values = len(self.sensors)
        pick = self._pick
        key_names = self._keys
        index: list[int] = []
        assets: list[str] = []
        raw_ts: list[Any] = []
        rows: list[Any] = []
        invalid: list[tuple[int, InvalidMessage]] = []
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            try:
                if value is None:
                    raise InvalidMessage("bad_json", "empty message (tombstone)")
                asset = self._key_asset(key, key_names)
                try:
                    body = orjson.loads(value)
                except orjson.JSONDecodeError:
                    body = _loads_lenient(value)
                kind = type(body)
                if kind is dict:
                    body_asset = body.get("asset")  # null or absent: the key names it
                    if body_asset is not None and body_asset != asset:
                        _check_body_asset(asset, body_asset)
                    sensor_values = body.get("values")
                    if type(sensor_values) is not dict:
                        raise InvalidMessage("missing_sensor", "no 'values' object")
                    try:
                        row = pick(sensor_values)
                    except KeyError as exc:
                        raise InvalidMessage(
                            "missing_sensor", f"sensor {exc.args[0]!r} is missing"[:120]
                        ) from None
                    ts = body.get("ts")
                elif kind is list:
                    if len(body) != n_values + 1:
                        raise InvalidMessage(
                            "wrong_length",
                            f"compact form needs [ts, {n_values} values], got {len(body)} items",
                        )
                    ts = body[0]
                    row = body[1:]
                else:
                    raise InvalidMessage("bad_json", f"expected an object or array, got {kind.__name__}")
            except InvalidMessage as exc:
                invalid.append((i, exc))
                continue
            except Exception as exc:  # a per-message failure is a dead letter, never an exit
                invalid.append((i, InvalidMessage("bad_json", f"unreadable: {exc!r}"[:200])))
                continue
            index.append(i)
            assets.append(asset)
            raw_ts.append(ts)
            rows.append(row)
        keep, ts_array, matrix = self._convert(raw_ts, rows, index, invalid)
        if keep is not None:
            index = [i for i, k in zip(index, keep, strict=True) if k]
            assets = [a for a, k in zip(assets, keep, strict=True) if k]
            ts_array, matrix = ts_array[keep], matrix[keep]
            invalid.sort(key=lambda item: item[0])
        return ParsedBatch(np.asarray(index, dtype=np.int64), assets, ts_array, matrix, invalid)

    def _key_asset(self, key: bytes | None, cache: dict[bytes | None, str | InvalidMessage]) -> str:
        name = cache.get(key)
        if name is None:
            try:
                name = _key_name(key)
                if self.allowed_assets and not any(fnmatch.fnmatchcase(name, p) for p in self.allowed_assets):
                    detail = f"asset {name!r} is not in processing.assets"[:200]
                    name = InvalidMessage("unknown_asset", detail)
            except InvalidMessage as exc:
                name = exc
            cache[key] = name
        if isinstance(name, InvalidMessage):
            raise name
        return name

    def _convert(
        self,
        raw_ts: list[Any],
        rows: list[Any],
        index: list[int],
        invalid: list[tuple[int, InvalidMessage]],
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Timestamps and values to arrays. Returns a keep-mask (None = all good); messages
        dropped by it are appended to ``invalid``."""
        n = len(rows)
        errors: dict[int, InvalidMessage] = {}
        ts = np.empty(n, dtype=np.float64)
        kinds = set(map(type, raw_ts))
        epoch = kinds <= _EPOCH
        if epoch:
            try:
                ts[:] = raw_ts
            except OverflowError:  # an integer beyond the float range: found one by one below
                epoch = False
        parsed: dict[Any, float | InvalidMessage] = {}  # many assets share one timestamp
        if not epoch and kinds == {str}:  # ISO strings: each distinct one parsed once
            for raw in dict.fromkeys(raw_ts):
                try:
                    parsed[raw] = parse_timestamp(raw)
                except InvalidMessage as exc:
                    parsed[raw] = exc
            if set(map(type, parsed.values())) == {float}:
                ts[:] = list(map(parsed.__getitem__, raw_ts))
                kinds = set()  # done: no time is invalid
        if epoch:
            for j in np.flatnonzero(~((ts >= EPOCH_MIN) & (ts <= EPOCH_MAX))):
                errors[int(j)] = _epoch_out_of_range(raw_ts[j])
        elif kinds:
            for j, raw in enumerate(raw_ts):
                cache_key = raw if type(raw) is str else None
                value = parsed.get(cache_key) if cache_key is not None else None
                if value is None:
                    try:
                        value = parse_timestamp(raw)
                    except InvalidMessage as exc:
                        value = exc
                    if cache_key is not None:
                        parsed[cache_key] = value
                if isinstance(value, InvalidMessage):
                    errors[j] = value
                    ts[j] = np.nan
                else:
                    ts[j] = value
        n_values = len(self.sensors)
        matrix = None
        if n and set(map(type, itertools.chain.from_iterable(rows))) <= _PLAIN:
            try:
                matrix = np.array(rows, dtype=np.float64).reshape(n, n_values)
            except OverflowError:  # an integer beyond the float range: found below
                pass
        if matrix is None:
            matrix = np.full((n, n_values), np.nan)
            for j, row in enumerate(rows):
                try:
                    matrix[j] = [_number(s, v) for s, v in zip(self.sensors, row, strict=True)]
                except InvalidMessage as exc:
                    errors.setdefault(j, exc)
        for j in np.flatnonzero(np.isinf(matrix).any(axis=1)):
            errors.setdefault(int(j), InvalidMessage("non_numeric", "a sensor value is infinite"))
        if not errors:
            return None, ts, matrix
        keep = np.ones(n, dtype=bool)
        for j, exc in errors.items():
            keep[j] = False
            invalid.append((index[j], exc))
        return keep, ts, matrix


def encode_reading_object(asset: str, ts: float | str, values: dict[str, float | None]) -> bytes:
    """The JSON object form (what ``memae-ts replay`` sends). ``None`` is a missing value; an
    infinite one is written as JSON's ``Infinity`` extension and dead-lettered by the daemon."""
    t = ts if isinstance(ts, str) else format_timestamp(ts)
    return json.dumps({"asset": asset, "ts": t, "values": values}, separators=(",", ":")).encode()


def encode_reading_compact(ts: float | str, values: list[float | None]) -> bytes:
    """The compact array form ``[ts, v0, v1, ...]`` in bundle sensor order."""
    return json.dumps([ts, *values], separators=(",", ":")).encode()


def encode_scores(
    assets: Sequence[str],
    ts: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    contributions: np.ndarray,
    sensors: Sequence[str],
    model_version: str,
    top_sensors: int = 3,
    model_name: str | None = None,
    modes: np.ndarray | None = None,
    novelty: np.ndarray | None = None,
    alarm_level: np.ndarray | None = None,
    alarm: np.ndarray | None = None,
    tail_probability: np.ndarray | None = None,
    *,
    native: bool | None = None,
) -> list[bytes]:
    """The output topic values, one per scored window, in input order.

    Fields: ``asset``, ``ts`` (as ``memae-ts score`` writes it), ``score``,
    ``normalised_score`` (score / threshold; 1.0 = alarm), ``is_anomaly``, ``top_sensors``
    (the sensors with the largest reconstruction error and their share of it, worst first, to
    4 decimals), ``model_version`` and, given ``model_name``, ``model`` (the [[model]] section).
    A bundle with operating modes adds ``mode`` (integer, null when no slot was addressed) and
    ``novelty_score`` (normalised, 1.0 = its threshold), and ``is_anomaly`` then follows
    ``alarm_level`` (the bundle's combine rule; memae_ts.detection.modes). Given ``alarm`` (the alarm
    rule's decision per window, memae_ts.detection.alarms), ``alarm`` (true/false); given
    ``tail_probability``, ``tail_probability`` (share of normal windows at or above the score;
    null for a bundle without a tail model is the caller's choice of leaving it out).
    Scores are written with ``repr`` (exact round trip),
    non-finite ones as null.

    Why two writers: the daemon writes one record per reading, and formatting them in Python
    (one ``%`` format per record over precomputed columns) cost about 6 us a record, a third
    of its CPU outside the engine at ``hop = 1``. The C++ writer (cpp/src/score_records.cpp,
    ``memae_ts._runtime.encode_score_records``) writes the same bytes (differential-tested
    and fuzzed); the Python one is the reference, and is used where the C++ one does not
    apply (an extension built before it, a time outside the years 1-9999, modes that are not
    integers). ``native``: None = the C++ writer where the extension has it; True / False
    force one (the differential tests).
    """
    if native is None:
        native = _native_records is not None
    n = len(assets)
    if n == 0:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    normalised = scores / threshold
    contributions = np.nan_to_num(np.asarray(contributions, dtype=np.float64), nan=0.0)
    k = min(top_sensors, len(sensors))
    top = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    totals = contributions.sum(axis=1)
    totals[~(totals > 0)] = 1.0
    shares = np.round(np.take_along_axis(contributions, top, axis=1) / totals[:, None], 4)
    sensor_json = np.array([json.dumps(s) for s in sensors], dtype=object)
    asset_json = {a: json.dumps(a) for a in set(assets)}
    if native:
        out = _encode_native(
            [asset_json[a] for a in assets], ts, scores, normalised, alarm_level, top, shares,
            sensor_json.tolist(), model_version, model_name, modes, novelty, alarm, tail_probability,
        )  # fmt: skip
        if out is not None:
            return out
    columns: list[list[Any]] = [
        [asset_json[a] for a in assets],
        format_timestamps(ts),
        _json_numbers(scores),
        _json_numbers(normalised),
        np.where((normalised if alarm_level is None else alarm_level) >= 1.0, "true", "false").tolist(),
    ]
    for j in range(k):
        columns.append(sensor_json[top[:, j]].tolist())
        columns.append(shares[:, j].tolist())
    template = (
        '{"asset":%s,"ts":"%s","score":%s,"normalised_score":%s,"is_anomaly":%s,"top_sensors":['
        + ",".join(['{"sensor":%s,"share":%.4f}'] * k)
        + "],"
        + f'"model_version":{json.dumps(model_version).replace("%", "%%")}'
        + ("" if model_name is None else f',"model":{json.dumps(model_name).replace("%", "%%")}')
        + ("" if modes is None or novelty is None else ',"mode":%s,"novelty_score":%s')
        + ("" if alarm is None else ',"alarm":%s')
        + ("" if tail_probability is None else ',"tail_probability":%s')
        + "}"
    )
    if modes is not None and novelty is not None:
        columns.append([str(int(m)) if m >= 0 else "null" for m in np.asarray(modes).tolist()])
        columns.append(_json_numbers(np.asarray(novelty, dtype=np.float64)))
    if alarm is not None:
        columns.append(np.where(np.asarray(alarm, dtype=bool), "true", "false").tolist())
    if tail_probability is not None:
        columns.append(_json_numbers(np.asarray(tail_probability, dtype=np.float64)))
    return [(template % row).encode() for row in zip(*columns, strict=True)]


def _encode_native(
    asset_json: list[str],
    ts: np.ndarray,
    scores: np.ndarray,
    normalised: np.ndarray,
    alarm_level: np.ndarray | None,
    top: np.ndarray,
    shares: np.ndarray,
    sensor_json: list[str],
    model_version: str,
    model_name: str | None,
    modes: np.ndarray | None,
    novelty: np.ndarray | None,
    alarm: np.ndarray | None,
    tail_probability: np.ndarray | None,
) -> list[bytes] | None:
    """The C++ writer's records, or None where only the Python one applies."""
    assert _native_records is not None
    micros = np.round(np.asarray(ts, dtype=np.float64) * 1_000_000)
    if not ((micros >= EPOCH_MIN * 1e6) & (micros <= EPOCH_MAX * 1e6)).all():  # also NaN
        return None
    with_modes = modes is not None and novelty is not None
    if with_modes and np.asarray(modes).dtype.kind not in "iu":
        return None
    anomaly = (normalised if alarm_level is None else np.asarray(alarm_level)) >= 1.0
    constant = f',"model_version":{json.dumps(model_version)}' + (
        "" if model_name is None else f',"model":{json.dumps(model_name)}'
    )
    f64 = np.ascontiguousarray
    return _native_records(  # type: ignore[no-any-return]
        asset_json,
        micros.astype(np.int64),
        f64(scores, dtype=np.float64),
        f64(normalised, dtype=np.float64),
        f64(anomaly, dtype=bool),
        f64(top, dtype=np.int64),
        f64(shares, dtype=np.float64),
        sensor_json,
        constant,
        f64(modes, dtype=np.int64) if with_modes else None,
        f64(novelty, dtype=np.float64) if with_modes else None,
        None if alarm is None else f64(alarm, dtype=bool),
        None if tail_probability is None else f64(tail_probability, dtype=np.float64),
    )


# The C++ score record writer; None with an extension built before it (the Python one then).
try:
    from memae_ts._runtime import encode_score_records as _native_records
except ImportError:  # pragma: no cover - an extension without it, or none
    _native_records = None

# The C++ reading parser (ReadingParser._parse_native); None without it (the Python paths then).
try:
    from memae_ts._runtime import parse_readings as _native_readings
except ImportError:  # pragma: no cover - an extension without it, or none
    _native_readings = None


def format_timestamps(ts: np.ndarray) -> list[str]:
    """:func:`format_timestamp` for a whole array at once."""
    micros = np.round(np.asarray(ts, dtype=np.float64) * 1_000_000).astype(np.int64)
    stamps = micros.astype("datetime64[us]")
    if not (micros % 1_000_000).any():
        return [t + "Z" for t in np.datetime_as_string(stamps, unit="s").tolist()]
    seconds = np.datetime_as_string(stamps, unit="s").tolist()
    fractional = np.datetime_as_string(stamps, unit="us").tolist()
    return [
        (f if m % 1_000_000 else s) + "Z"
        for s, f, m in zip(seconds, fractional, micros.tolist(), strict=True)
    ]


def _json_numbers(values: np.ndarray) -> list[str]:
    if np.isfinite(values).all():
        return list(map(repr, values.tolist()))
    return [_json_number(v) for v in values.tolist()]


def _json_number(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else "null"


def encode_episode(
    event: str,
    episode: Any,
    sensors: Sequence[str],
    model_version: str,
    model_name: str | None = None,
    top_sensors: int = 3,
) -> bytes:
    """An episode record (memae_ts.detection.alarms.Episode) for the episodes topic, key = asset.

    ``event`` is ``opened`` (sent at the window that raised the alarm: ``end``, ``peak`` and
    ``windows`` are as of that window) or ``closed`` (the whole episode; ``end_reason``
    ``cleared`` or ``gap``). ``episode_id`` (asset and start time) is the same in both, so a
    consumer pairs them. Times as in score records; ``peak`` is the highest normalised score.
    """
    body = {
        "event": event,
        "episode_id": f"{episode.asset}@{format_timestamp(episode.start)}",
        "asset": episode.asset,
        "start": format_timestamp(episode.start),
        "end": format_timestamp(episode.end),
        "peak": episode.peak if math.isfinite(episode.peak) else None,
        "peak_time": format_timestamp(episode.peak_time),
        "windows": int(episode.windows),
        "top_sensors": [
            {"sensor": name, "share": round(share, 4)}
            for name, share in episode.top_sensors(list(sensors), top_sensors)
        ],
        "end_reason": None if event == "opened" else episode.end_reason,
        "model_version": model_version,
    }
    if model_name is not None:
        body["model"] = model_name
    return json.dumps(body, separators=(",", ":")).encode()
