"""Assembling readings from values that arrive one sensor at a time: the part the MQTT tag
form (``connectors/mqtt_source.py``) and the OPC UA source (``connectors/opcua_source.py``)
share.

Why one class: both keep, per asset, the readings still open (keyed by their timestamp), close
a reading as soon as every sensor of the model has a value in it (and every older open reading
of that asset with it: readings go forward in time), close one that stays incomplete a fixed
wall-clock wait after its first value, and refuse a value for a reading already closed (late,
counted in ``memae_ts_source_late_values_total``). A second value of a sensor in one reading
replaces the first (``memae_ts_source_values_superseded_total``). What differs — how the
values of a closed reading are completed (MQTT: missing; OPC UA: the last value held) — is the
subclass's :meth:`TickBuffer._close`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from memae_ts.connectors.sources import SourceMetrics


class PendingReading:
    """The values (and acknowledgement tokens) received so far for one asset and timestamp."""

    __slots__ = ("first_seen", "tokens", "values")

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.tokens: list[Any] = []
        self.first_seen = time.monotonic()


class TickBuffer:
    """Open readings per asset; thread-safe (a client thread adds, a timer expires).

    ``sensors_of(asset)`` names the sensors that complete a reading of that asset.
    """

    def __init__(
        self, sensors_of: Callable[[str], list[str]], wait_seconds: float, metrics: SourceMetrics
    ) -> None:
        self.sensors_of = sensors_of
        self.wait_seconds = wait_seconds
        self.metrics = metrics
        self.pending: dict[str, dict[float, PendingReading]] = {}
        self.closed_until: dict[str, float] = {}  # per asset, the ts of the last closed reading
        self.lock = threading.Lock()

    def put(self, asset: str, sensor: str, ts: float, value: float | None, token: Any = None) -> bool:
        """One value into the reading of ``(asset, ts)``; False (counted) when that reading was
        closed already — the caller decides whether the value is a dead letter."""
        with self.lock:
            last = self.closed_until.get(asset)
            if last is not None and ts <= last:
                self.metrics.late.inc()
                return False
            readings = self.pending.setdefault(asset, {})
            reading = readings.get(ts)
            if reading is None:
                reading = readings[ts] = PendingReading()
            if sensor in reading.values:
                self.metrics.superseded.inc()
            reading.values[sensor] = value
            if token is not None:
                reading.tokens.append(token)
            if all(s in reading.values for s in self.sensors_of(asset)):
                self._close_until(asset, ts)
            return True

    def expire(self) -> None:
        """Close readings whose first value is older than ``wait_seconds`` (called periodically)."""
        now = time.monotonic()
        with self.lock:
            for asset, readings in list(self.pending.items()):
                old = [ts for ts, r in readings.items() if now - r.first_seen >= self.wait_seconds]
                if old:
                    self._close_until(asset, max(old))

    def _close_until(self, asset: str, until: float) -> None:
        readings = self.pending[asset]
        for ts in sorted(t for t in readings if t <= until):
            self._close(asset, ts, readings.pop(ts))
        self.closed_until[asset] = until
        if not readings:
            del self.pending[asset]

    def _close(self, asset: str, ts: float, reading: PendingReading) -> None:
        """Complete and emit one closed reading (called in time order per asset, under the lock)."""
        raise NotImplementedError
