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
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from connectors.buffers import WindowBuffers
from connectors.kafka_sink import KafkaSink
from connectors.kafka_source import KafkaSource
from connectors.messages import ReadingParser, encode_scores
from connectors.metrics import EdgeMetrics
from connectors.resampling import ResampledBuffers
from memae_ts.resample import ResampleSpec

log = logging.getLogger(__name__)


class Engine(Protocol):
    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ServedModel:
    """What the stream needs from a bundle: the engine plus how to window and label.

    With ``resample`` set, readings are put on the model's time grid first and windows are cut
    from grid rows, split only where a grid row has a missing value (as offline after
    resampling): ``max_gap_seconds`` and ``max_fill_rows`` do not apply then.
    """

    engine: Engine
    sensors: list[str]
    window: int
    threshold: float
    version: str
    engine_name: str = "unknown"
    max_gap_seconds: float | None = None
    max_fill_rows: int = 0
    resample: ResampleSpec | None = None

    def same_windows(self, other: ServedModel) -> bool:
        """True when buffers built for ``other`` are valid for this model too."""
        return (
            self.sensors == other.sensors
            and self.window == other.window
            and self.max_gap_seconds == other.max_gap_seconds
            and self.max_fill_rows == other.max_fill_rows
            and self.resample == other.resample
        )


@dataclass
class ProcessingConfig:
    top_sensors: int = 3
    backwards_tolerance_seconds: float = 0.0
    max_assets: int = 10_000
    poll_timeout_ms: int = 200
    flush_timeout_s: float = 60.0
    score_chunk: int = 1024  # readings per slice of a poll; one engine call per slice
    allowed_assets: tuple[str, ...] = ()  # names or shell patterns; empty: every asset


@dataclass
class _Scoring:
    """A slice of a poll whose windows are being scored on the engine thread."""

    model: ServedModel
    result: Future[tuple[np.ndarray, np.ndarray]]
    assets: list[str]
    ts: np.ndarray
    kafka_ms: np.ndarray


@dataclass
class _Pending:
    """Work done since the last checkpoint."""

    next_offsets: dict[int, int] = field(default_factory=dict)
    readings: int = 0
    produced_ms: list[np.ndarray] = field(default_factory=list)  # Kafka timestamps of scored readings


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
        # Per assigned partition, the next offset to process live (read by the lag monitor
        # thread: replaced, never mutated in place, so a reader sees a whole dict).
        self.positions: dict[int, int] = {}
        self.engine_seconds = 0.0
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._keys: dict[str, bytes] = {}
        self._install(model)
        # The source calls back into us on rebalance, so it is built last.
        self.source: KafkaSource = source_factory(self._on_revoked, self._on_assigned, self._on_rewound)

    def _install(self, model: ServedModel) -> None:
        self.model = model
        self.parser = ReadingParser(model.sensors, self.config.allowed_assets)
        self.buffers: WindowBuffers | ResampledBuffers
        if model.resample is not None:
            self.buffers = ResampledBuffers(
                model.resample, model.window, len(model.sensors), max_assets=self.config.max_assets
            )
            # An asset silent for longer than the limit holds nothing for the rows after its
            # silence except the first `limit` of them; it must not pin the rewind point.
            self._stale_after: float | None = model.resample.limit()
        else:
            self.buffers = WindowBuffers(
                model.window,
                len(model.sensors),
                max_gap_seconds=model.max_gap_seconds,
                max_fill_rows=model.max_fill_rows,
                backwards_tolerance_seconds=self.config.backwards_tolerance_seconds,
                max_assets=self.config.max_assets,
            )
            self._stale_after = model.max_gap_seconds
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
        """Parse, window and score one poll's records; dead-letter what cannot be used.

        Why slices on two threads: the engine releases the GIL, so while it scores one slice
        of the poll on the worker thread, this thread parses the next slice and encodes and
        hands the previous one to the producer (and the broker stores it meanwhile).
        """
        step = max(1, self.config.score_chunk)
        in_flight: deque[_Scoring] = deque()
        try:
            for lo in range(0, len(records), step):
                scoring = self._prepare(records[lo : lo + step])
                if scoring is not None:
                    in_flight.append(scoring)
                while len(in_flight) > 1:
                    self._publish(in_flight.popleft())
            while in_flight:
                self._publish(in_flight.popleft())
        except BaseException:
            # Offsets of readings whose scores were never produced must not be committed (not
            # even by the checkpoint of a shutdown): forget everything uncommitted, so it is
            # read and scored again. Duplicates, never gaps.
            self._pending = _Pending()
            raise

    def _prepare(self, records: list[Any]) -> _Scoring | None:
        """Parse and window a slice; dead-letter and count it; start scoring its windows.

        History records (re-read after a rewind to rebuild windows) refill buffers only: they
        were scored, dead-lettered and counted before.
        """
        n = len(records)
        parsed = self.parser.parse_batch([r.key for r in records], [r.value for r in records])
        partitions = np.fromiter((r.partition for r in records), np.int64, n)
        offsets = np.fromiter((r.offset for r in records), np.int64, n)
        history = self.source.history_mask(partitions, offsets)
        invalid = parsed.invalid
        rebuilt = int(history.sum())
        if rebuilt:
            self.metrics.rebuild_readings.inc(rebuilt)

        by_asset: dict[str, list[int]] = {}
        for j, asset in enumerate(parsed.assets):
            by_asset.setdefault(asset, []).append(j)
        windows: list[np.ndarray] = []
        scored: list[np.ndarray] = []  # positions in `parsed` of the readings that completed a window
        ends_ts: list[np.ndarray] = []  # the times those windows end at (grid times if resampled)
        for asset, members in by_asset.items():
            js = np.asarray(members, dtype=np.int64)
            rec = parsed.index[js]
            made = self.buffers.extend(
                asset, int(partitions[rec[-1]]), parsed.ts[js], parsed.values[js], offsets[rec]
            )
            invalid.extend((int(rec[pos]), exc) for pos, exc in made.rejected)
            if len(made.ends):
                live = ~history[rec[made.ends]]
                windows.append(made.windows[live])
                scored.append(js[made.ends[live]])
                ends_ts.append(parsed.ts[scored[-1]] if made.ts is None else made.ts[live])

        for i, exc in sorted(invalid, key=lambda item: item[0]):
            if history[i]:
                continue
            r = records[i]
            self.metrics.invalid.labels(reason=exc.reason).inc()
            self.sink.dead_letter(r.key, r.value, exc.reason, exc.detail, (r.topic, r.partition, r.offset))
        self._advance(partitions[~history], offsets[~history])
        order = np.concatenate(scored) if scored else np.empty(0, dtype=np.int64)
        if not len(order):
            return None
        model = self.model
        return _Scoring(
            model=model,
            result=self._engine_thread.submit(self._run_engine, model.engine, np.concatenate(windows)),
            assets=[parsed.assets[j] for j in order],
            ts=np.concatenate(ends_ts),
            kafka_ms=np.fromiter((records[i].timestamp for i in parsed.index[order]), np.int64, len(order)),
        )

    def _advance(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        if not len(partitions):
            return
        for p in np.unique(partitions).tolist():
            self._pending.next_offsets[p] = int(offsets[partitions == p].max()) + 1
        self.positions = {**self.positions, **self._pending.next_offsets}
        self._pending.readings += len(partitions)
        self.metrics.readings.inc(len(partitions))
        self.metrics.readings_in_progress.set(self._pending.readings)

    def _publish(self, scoring: _Scoring) -> None:
        """Wait for a slice's scores, then hand its records to the producer (windows are
        grouped by asset, each group in time order)."""
        model, assets = scoring.model, scoring.assets
        scores, contributions = scoring.result.result()
        values = encode_scores(
            assets, scoring.ts, scores, model.threshold, contributions, model.sensors, model.version,
            self.config.top_sensors,
        )  # fmt: skip
        keys = self._keys
        self.sink.publish_many([keys.get(a) or keys.setdefault(a, a.encode()) for a in assets], values)
        self._pending.produced_ms.append(scoring.kafka_ms)

        # Gauges show the latest window per asset: one update per asset and slice.
        normalised = scores / model.threshold
        anomalous = normalised >= 1.0
        names = np.array(assets, dtype=object)
        starts = np.flatnonzero(np.concatenate([[True], names[1:] != names[:-1]]))
        counts = np.add.reduceat(anomalous.astype(np.int64), starts)
        lasts = np.append(starts[1:], len(assets)) - 1
        for last, count in zip(lasts.tolist(), counts.tolist(), strict=True):
            self.metrics.observe_score(
                assets[last], float(scores[last]), float(normalised[last]), bool(anomalous[last]), count
            )
        self.metrics.windows_scored.inc(len(assets))
        self.metrics.last_reading.set(float(scoring.ts.max()))

    def _run_engine(self, engine: Engine, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        scores, contributions = engine.score(windows)
        elapsed = time.perf_counter() - t0
        self.engine_seconds += elapsed
        self.metrics.inference.observe(elapsed)
        return np.asarray(scores, dtype=np.float64), np.asarray(contributions)

    def checkpoint(self) -> None:
        """Flush the sink (all acks in), then commit offsets. No-op when nothing is pending."""
        pending = self._pending
        if not pending.next_offsets:
            return
        published = self.sink.flush(self.config.flush_timeout_s)
        now = time.time()
        if pending.produced_ms:
            produced = np.concatenate(pending.produced_ms) / 1000.0
            self.metrics.end_to_end.observe_many(np.maximum(0.0, now - produced))
        rebuild_from = self.buffers.rebuild_offsets(self._stale_after)
        committed = self.source.commit(pending.next_offsets, rebuild_from)
        self.metrics.set_rebuild_span(
            {p: off - min(off, rebuild_from.get(p, off)) for p, off in pending.next_offsets.items()}
        )
        self.metrics.scores_published.inc(sum(len(p) for p in pending.produced_ms))
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
        self.positions = {p: off for p, off in self.positions.items() if p not in partitions}
        self.metrics.forget_partitions(partitions)

    def _on_assigned(self, partitions: set[int]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})

    def _on_rewound(self, partition: int, committed: int, start: int, wanted: int) -> None:
        """A partition was sought back to rebuild its windows (see KafkaSource.rewind)."""
        self.metrics.rebuilds.inc()
        if start > wanted:
            self.metrics.rebuild_truncated.inc()
        self.positions = {**self.positions, partition: committed}

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

    def close(self, settle_s: float = 10.0) -> None:
        """Checkpoint what was processed, then leave the group and close the clients.

        A commit refused because a rebalance is under way (a member joining or leaving as we
        stop) is retried after letting the consumer finish the rebalance, for up to
        ``settle_s``: a clean stop must leave nothing to score again. Offsets of partitions
        the rebalance takes away are the new owner's to read."""
        try:
            self.checkpoint()
            deadline = time.monotonic() + settle_s
            while self._pending.next_offsets and time.monotonic() < deadline:
                self.source.settle(100)
                self.checkpoint()
            if self._pending.next_offsets:
                log.warning(
                    "stopping with offsets not committed; they will be read and scored again",
                    extra={"offsets": self._pending.next_offsets},
                )
        finally:
            self._engine_thread.shutdown(wait=True)
            self.source.close()
            self.sink.close()
