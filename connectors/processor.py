"""The processing step between source and sink: parse → buffer → score in batches → publish,
then a checkpoint in a fixed order.

Commit order (written down because at-least-once depends on it):

1. every score record and dead letter of the processed readings is handed to the producer;
2. the producer is flushed: all of them acknowledged by the broker (``acks=all``);
3. only then the input offsets (last processed + 1) are committed, with the rebuild point.

A crash anywhere before 3 re-reads the readings and re-scores them (duplicates, never gaps).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from connectors.buffers import WindowBuffers
from connectors.kafka_sink import KafkaSink
from connectors.kafka_source import KafkaSource
from connectors.messages import InvalidMessage, ReadingParser, ScoreRecord
from connectors.metrics import EdgeMetrics

log = logging.getLogger(__name__)


class Engine(Protocol):
    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ServedModel:
    """What the stream needs from a bundle: the engine plus how to window and label."""

    engine: Engine
    sensors: list[str]
    window: int
    threshold: float
    version: str
    engine_name: str = "unknown"
    max_gap_seconds: float | None = None
    max_fill_rows: int = 0

    def same_windows(self, other: ServedModel) -> bool:
        """True when buffers built for ``other`` are valid for this model too."""
        return (
            self.sensors == other.sensors
            and self.window == other.window
            and self.max_gap_seconds == other.max_gap_seconds
            and self.max_fill_rows == other.max_fill_rows
        )


@dataclass
class ProcessingConfig:
    top_sensors: int = 3
    backwards_tolerance_seconds: float = 0.0
    max_assets: int = 10_000
    poll_timeout_ms: int = 200
    flush_timeout_s: float = 60.0


@dataclass
class _Pending:
    """Work done since the last checkpoint."""

    next_offsets: dict[int, int] = field(default_factory=dict)
    readings: int = 0
    produced_ms: list[int] = field(default_factory=list)  # Kafka timestamps of scored readings


class StreamProcessor:
    """Owns the window buffers; driven by :meth:`step` from the daemon loop."""

    def __init__(
        self,
        source_factory: Any,
        sink: KafkaSink,
        model: ServedModel,
        metrics: EdgeMetrics,
        config: ProcessingConfig | None = None,
    ) -> None:
        self.config = config or ProcessingConfig()
        self.sink = sink
        self.metrics = metrics
        self.model = model
        self._pending = _Pending()
        self._lags_seen: dict[int, int] = {}
        self.engine_seconds = 0.0
        self._install(model)
        # The source calls back into us on rebalance, so it is built last.
        self.source: KafkaSource = source_factory(self._on_revoked, self._on_assigned)

    def _install(self, model: ServedModel) -> None:
        self.model = model
        self.parser = ReadingParser(model.sensors)
        self.buffers = WindowBuffers(
            model.window,
            len(model.sensors),
            max_gap_seconds=model.max_gap_seconds,
            max_fill_rows=model.max_fill_rows,
            backwards_tolerance_seconds=self.config.backwards_tolerance_seconds,
            max_assets=self.config.max_assets,
        )
        self.metrics.set_model(model.version, model.sensors, model.window, model.engine_name)

    # -- steps --------------------------------------------------------------------------

    def step(self) -> int:
        """Poll once, process what came, checkpoint. Returns the number of messages."""
        t0 = time.monotonic()
        records = self.source.poll(self.config.poll_timeout_ms)
        if records:
            self.process(records)
        elif not self.source.assigned:
            # A member without partitions (more daemons than partitions, topic not there yet):
            # kafka-python may return at once, so wait here instead of spinning on a core.
            time.sleep(max(0.0, self.config.poll_timeout_ms / 1000 - (time.monotonic() - t0)))
        self.checkpoint()
        return len(records)

    def process(self, records: list[Any]) -> None:
        windows: list[np.ndarray] = []
        meta: list[tuple[str, float, int]] = []
        for rec in records:
            history = self.source.is_history(rec.partition, rec.offset)
            try:
                reading = self.parser.parse(rec.key, rec.value)
                window = self.buffers.push(reading, rec.partition, rec.offset)
            except InvalidMessage as exc:
                if not history:  # a re-read invalid message was dead-lettered already
                    self.metrics.invalid.labels(reason=exc.reason).inc()
                    self.sink.dead_letter(
                        rec.key, rec.value, exc.reason, exc.detail,
                        (rec.topic, rec.partition, rec.offset),
                    )
                    self._advance(rec)
                continue
            if history:
                continue
            self._advance(rec)
            if window is not None:
                windows.append(window.copy())
                meta.append((reading.asset, reading.ts, rec.timestamp))
        if windows:
            self._score(np.stack(windows), meta)

    def _advance(self, rec: Any) -> None:
        self._pending.next_offsets[rec.partition] = rec.offset + 1
        self._pending.readings += 1
        self.metrics.readings.inc()
        self.metrics.readings_in_progress.set(self._pending.readings)

    def _score(self, batch: np.ndarray, meta: list[tuple[str, float, int]]) -> None:
        model = self.model
        t0 = time.perf_counter()
        scores, contributions = model.engine.score(batch)
        elapsed = time.perf_counter() - t0
        self.engine_seconds += elapsed
        self.metrics.inference.observe(elapsed)
        k = min(self.config.top_sensors, len(model.sensors))
        contributions = np.asarray(contributions, dtype=np.float64)
        top = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
        totals = contributions.sum(axis=1)
        totals[totals == 0] = 1.0
        inv_threshold = 1.0 / model.threshold
        latest: dict[str, tuple[float, float, bool]] = {}
        anomalies: dict[str, int] = {}
        sensors = model.sensors
        for i, (asset, ts, produced_ms) in enumerate(meta):
            score = float(scores[i])
            normalised = score * inv_threshold
            anomaly = normalised >= 1.0
            self.sink.publish(
                ScoreRecord(
                    asset=asset,
                    ts=ts,
                    score=score,
                    normalised_score=normalised,
                    is_anomaly=anomaly,
                    top_sensors=[(sensors[j], float(contributions[i, j] / totals[i])) for j in top[i]],
                    model_version=model.version,
                )
            )
            latest[asset] = (score, normalised, anomaly)
            anomalies[asset] = anomalies.get(asset, 0) + anomaly
            self._pending.produced_ms.append(produced_ms)
        # Gauges only show the latest window: one update per asset and batch, not per window.
        for asset, (score, normalised, anomaly) in latest.items():
            self.metrics.observe_score(asset, score, normalised, anomaly, anomalies[asset])
        self.metrics.windows_scored.inc(len(meta))
        self.metrics.last_reading.set(max(m[1] for m in meta))

    def checkpoint(self) -> None:
        """Flush the sink (all acks in), then commit offsets. No-op when nothing is pending."""
        pending = self._pending
        if not pending.next_offsets:
            return
        published = self.sink.flush(self.config.flush_timeout_s)
        now = time.time()
        for produced_ms in pending.produced_ms:
            self.metrics.end_to_end.observe(max(0.0, now - produced_ms / 1000.0))
        stale = self.model.max_gap_seconds
        committed = self.source.commit(pending.next_offsets, self.buffers.rebuild_offsets(stale))
        self.metrics.scores_published.inc(len(pending.produced_ms))
        self.metrics.readings_in_progress.set(0)
        self._lags_seen.update(pending.next_offsets)
        self.metrics.set_lag(self.source.lags(self._lags_seen))
        log.debug("checkpoint", extra={"offsets": pending.next_offsets, "acked": published})
        self._pending = _Pending()
        if committed:
            self.metrics.commits.inc()
            self.metrics.last_processed.set(now)
        else:
            # Scores are out; commit these offsets with the next checkpoint if we still own
            # the partitions (a revocation in between drops them: the new owner re-reads).
            self._pending.next_offsets = {
                p: off for p, off in pending.next_offsets.items() if p in self.source.assigned
            }

    # -- rebalance and reload -----------------------------------------------------------

    def _on_revoked(self, partitions: set[int]) -> None:
        # Called inside poll(); step() checkpoints after every poll, so nothing is pending here.
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})
        for p in partitions:  # offsets whose commit failed: the next owner re-reads them
            self._pending.next_offsets.pop(p, None)
        self.metrics.forget_assets(self.buffers.assets_in(partitions))
        self.buffers.drop_partitions(partitions)
        for p in partitions:
            self._lags_seen.pop(p, None)
        self.metrics.forget_partitions(partitions)

    def _on_assigned(self, partitions: set[int]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})

    def swap_model(self, model: ServedModel) -> None:
        """Serve ``model`` from the next batch on. Buffers are kept when the windowing is the
        same; otherwise they are rebuilt from the committed rebuild points."""
        if model.same_windows(self.model):
            self.model = model
            self.metrics.set_model(model.version, model.sensors, model.window, model.engine_name)
            return
        self.checkpoint()
        self._install(model)
        self.source.rewind(set(self.source.assigned))

    def close(self) -> None:
        """Checkpoint what was processed, then leave the group and close the clients."""
        try:
            self.checkpoint()
        finally:
            self.source.close()
            self.sink.close()
