"""The Kafka message contract of the edge daemon: readings in, score records out.

Readings are one message per row, key = asset id (so one asset stays in one partition and in
order). Two value forms are accepted:

* JSON object: ``{"asset": "pump-7", "ts": "2026-11-30T04:10:00Z", "values": {"Pressure": 1.02}}``;
  ``asset`` may be left out when the key carries it; extra sensors are ignored.
* compact JSON array in the bundle's sensor order: ``[ts, v0, v1, ...]``; the asset is the key.

``ts`` is ISO 8601 (a zone-less time is UTC) or Unix epoch seconds. A sensor value of ``null``
is a missing value (forward-filled like offline scoring does); a sensor that is absent or not
a number makes the message invalid. Every invalid message raises :class:`InvalidMessage`
carrying a short machine-readable reason that ends up in the dead-letter header and in the
``memae_ts_invalid_messages_total{reason}`` metric.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

# Reasons are a closed set so the metric label stays low-cardinality.
REASONS = (
    "bad_json",
    "bad_asset",
    "bad_timestamp",
    "missing_sensor",
    "non_numeric",
    "wrong_length",
    "time_backwards",
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


def parse_timestamp(raw: Any) -> float:
    """ISO 8601 string or epoch seconds -> epoch seconds (UTC)."""
    if isinstance(raw, bool):
        raise InvalidMessage("bad_timestamp", f"not a timestamp: {raw!r}")
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw):
            raise InvalidMessage("bad_timestamp", f"not finite: {raw!r}")
        return float(raw)
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
        return parsed.timestamp()
    raise InvalidMessage("bad_timestamp", f"missing or not a timestamp: {raw!r}"[:120])


def format_timestamp(ts: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with ``Z``, as ``memae-ts score`` writes it (microseconds
    only when present)."""
    micros = round(ts * 1_000_000)
    seconds, frac = divmod(micros, 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{text}.{frac:06d}Z" if frac else f"{text}Z"


def _number(sensor: str, raw: Any) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidMessage("non_numeric", f"sensor {sensor!r} is {raw!r}"[:120])
    value = float(raw)
    if math.isinf(value):
        raise InvalidMessage("non_numeric", f"sensor {sensor!r} is infinite")
    return value


def _asset(key: bytes | None, body_asset: Any) -> str:
    if body_asset is not None:
        if not isinstance(body_asset, str) or not body_asset.strip():
            raise InvalidMessage("bad_asset", f"asset must be a non-empty string: {body_asset!r}")
        return body_asset
    if key:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("bad_asset", "message key is not UTF-8") from None
    raise InvalidMessage("bad_asset", "no asset in the message and no key")


class ReadingParser:
    """Turns raw Kafka key/value bytes into :class:`Reading` for one bundle's sensor list."""

    def __init__(self, sensors: list[str]) -> None:
        self.sensors = list(sensors)

    def parse(self, key: bytes | None, value: bytes | None) -> Reading:
        if value is None:
            raise InvalidMessage("bad_json", "empty message (tombstone)")
        try:
            body = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidMessage("bad_json", str(exc)[:120]) from None
        if isinstance(body, list):
            return self._compact(key, body)
        if isinstance(body, dict):
            return self._object(key, body)
        raise InvalidMessage("bad_json", f"expected an object or array, got {type(body).__name__}")

    def _object(self, key: bytes | None, body: dict[str, Any]) -> Reading:
        asset = _asset(key, body.get("asset"))
        ts = parse_timestamp(body.get("ts"))
        values = body.get("values")
        if not isinstance(values, dict):
            raise InvalidMessage("missing_sensor", "no 'values' object")
        try:
            raw = [values[s] for s in self.sensors]
        except KeyError as exc:
            raise InvalidMessage("missing_sensor", f"sensor {exc.args[0]!r} is missing"[:120]) from None
        if all(type(v) is float or type(v) is int for v in raw):  # fast path: all plain numbers
            row = np.array(raw, dtype=np.float64)
            if np.isinf(row).any():
                raise InvalidMessage("non_numeric", "a sensor value is infinite")
            return Reading(asset, ts, row)
        return Reading(asset, ts, np.array([_number(s, v) for s, v in zip(self.sensors, raw, strict=True)]))

    def _compact(self, key: bytes | None, body: list[Any]) -> Reading:
        if len(body) != len(self.sensors) + 1:
            raise InvalidMessage(
                "wrong_length",
                f"compact form needs [ts, {len(self.sensors)} values], got {len(body)} items",
            )
        asset = _asset(key, None)
        ts = parse_timestamp(body[0])
        row = np.array(
            [_number(s, v) for s, v in zip(self.sensors, body[1:], strict=True)],
            dtype=np.float64,
        )
        return Reading(asset, ts, row)


def encode_reading_object(asset: str, ts: float | str, values: dict[str, float | None]) -> bytes:
    """The JSON object form (used by ``memae-ts replay``)."""
    t = ts if isinstance(ts, str) else format_timestamp(ts)
    return json.dumps({"asset": asset, "ts": t, "values": values}, allow_nan=False).encode()


def encode_reading_compact(ts: float | str, values: list[float | None]) -> bytes:
    """The compact array form ``[ts, v0, v1, ...]`` in bundle sensor order."""
    return json.dumps([ts, *values], allow_nan=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """One score per window end; the output topic value is its JSON encoding."""

    asset: str
    ts: float
    score: float
    normalised_score: float
    is_anomaly: bool
    top_sensors: list[tuple[str, float]]  # (sensor, share of the score), worst first
    model_version: str

    def to_json(self) -> bytes:
        # Hand-built (the daemon writes one per window): strings through json.dumps, floats
        # through repr (exact round trip), non-finite numbers as null.
        top = ",".join(
            f'{{"sensor":{json.dumps(s)},"share":{_json_number(round(v, 4))}}}' for s, v in self.top_sensors
        )
        return (
            f'{{"asset":{json.dumps(self.asset)},"ts":"{format_timestamp(self.ts)}",'
            f'"score":{_json_number(self.score)},"normalised_score":{_json_number(self.normalised_score)},'
            f'"is_anomaly":{"true" if self.is_anomaly else "false"},"top_sensors":[{top}],'
            f'"model_version":{json.dumps(self.model_version)}}}'
        ).encode()


def _json_number(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else "null"
