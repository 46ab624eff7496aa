"""Prometheus metrics of the edge daemon, behind one small class.

Why a class and not module-level globals: tests build it on an isolated
``CollectorRegistry`` and read samples back, and the processing code calls a few intention-
revealing methods instead of scattering client calls. Names follow the Prometheus
conventions: ``memae_ts_`` prefix, base units (``_seconds``), ``_total`` for counters, and
labels that stay low-cardinality (``asset`` is bounded by the plant, ``reason`` is a closed set,
``partition`` by the topic). ``sum()`` over any label is meaningful.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from connectors.messages import REASONS

# Latency buckets from 1 ms to 30 s: inference is milliseconds, end to end may include
# a broker outage.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class BatchHistogram(Collector):
    """A histogram fed a whole array at a time.

    Why not ``prometheus_client.Histogram``: its ``observe`` takes one value under a lock, and
    the end-to-end latency has one value per reading (about a microsecond each at stream rates).
    Exposed exactly like a client histogram: ``_bucket{le}`` (cumulative), ``_count``, ``_sum``.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.array([*sorted(buckets), math.inf])
        self._labels = [floatToGoString(b) for b in self._bounds]
        self._counts = np.zeros(len(self._bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._bounds))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def observe(self, value: float) -> None:
        self.observe_many(np.array([value]))

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(self._labels, cumulative, strict=True)),
            sum_value=total,
        )

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class EdgeMetrics:
    """Every series the daemon exports; series that can be pre-created start at 0."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.readings = Counter(
            "memae_ts_readings", "Reading messages consumed from the input topic.", registry=r
        )
        self.readings_in_progress = Gauge(
            "memae_ts_readings_in_progress",
            "Readings of the current batch not yet committed.",
            registry=r,
        )
        self.windows_scored = Counter(
            "memae_ts_windows_scored", "Windows scored (one score record each).", registry=r
        )
        self.scores_published = Counter(
            "memae_ts_scores_published",
            "Score records acknowledged by the broker on the output topic.",
            registry=r,
        )
        self.anomalies = Counter(
            "memae_ts_anomalies",
            "Windows whose normalised score reached 1 (the threshold), per asset.",
            ["asset"],
            registry=r,
        )
        self.invalid = Counter(
            "memae_ts_invalid_messages",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:
            self.invalid.labels(reason=reason)
        self.last_processed = Gauge(
            "memae_ts_last_processed_timestamp_seconds",
            "Unix time at which the last batch was committed.",
            registry=r,
        )
        self.last_reading = Gauge(
            "memae_ts_last_reading_timestamp_seconds",
            "Timestamp (Unix time) of the newest reading scored.",
            registry=r,
        )
        self.score = Gauge(
            "memae_ts_anomaly_score",
            "Latest raw anomaly score per asset (higher is more abnormal).",
            ["asset"],
            registry=r,
        )
        self.normalised = Gauge(
            "memae_ts_anomaly_score_normalised",
            "Latest anomaly score divided by the model threshold (1 = threshold).",
            ["asset"],
            registry=r,
        )
        self.flag = Gauge(
            "memae_ts_anomaly_active",
            "1 when the latest window of the asset is anomalous, else 0.",
            ["asset"],
            registry=r,
        )
        self.inference = Histogram(
            "memae_ts_inference_duration_seconds",
            "Time the scoring engine takes for one batch of windows.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = BatchHistogram(
            "memae_ts_end_to_end_latency_seconds",
            "From the reading's Kafka timestamp to its score being acknowledged by the broker.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "memae_ts_consumer_lag_messages",
            "Messages behind the end of each assigned input partition.",
            ["partition"],
            registry=r,
        )
        self.commits = Counter(
            "memae_ts_offset_commits",
            "Offset commits after the scores were acknowledged.",
            registry=r,
        )
        self.model_info = Info("memae_ts_model", "The model bundle being served.", registry=r)
        self.model_reloads = Counter(
            "memae_ts_model_reloads",
            "Model reloads requested with SIGHUP, by result.",
            ["result"],
            registry=r,
        )
        for result in ("ok", "error"):
            self.model_reloads.labels(result=result)
        self.ready = Gauge(
            "memae_ts_ready", "1 when the daemon has a model and a working consumer.", registry=r
        )
        self.loop_heartbeat = Gauge(
            "memae_ts_loop_timestamp_seconds",
            "Unix time at which the processing loop last completed a poll (idle or not).",
            registry=r,
        )
        self.broker_up = Gauge(
            "memae_ts_broker_up",
            "1 when the broker answered the last end-offset request of the lag monitor.",
            registry=r,
        )
        self.lag_updated = Gauge(
            "memae_ts_consumer_lag_timestamp_seconds",
            "Unix time at which the lag was last measured (the lag monitor runs beside the loop).",
            registry=r,
        )
        self.rebuilds = Counter(
            "memae_ts_rebuilds",
            "Partitions rewound to their rebuild point (assignment, restart, model change).",
            registry=r,
        )
        self.rebuild_readings = Counter(
            "memae_ts_rebuild_readings",
            "Readings re-read only to rebuild windows (scored before).",
            registry=r,
        )
        self.rebuild_truncated = Counter(
            "memae_ts_rebuild_truncated",
            "Rewinds that could not go back to the rebuild point (max_rewind_messages or log "
            "retention): assets whose windows reach further back start a new warm-up.",
            registry=r,
        )
        self.rebuild_span = Gauge(
            "memae_ts_rebuild_span_messages",
            "Messages a rewind of the partition would re-read now (committed offset minus rebuild "
            "point); above max_rewind_messages a restart loses warm-ups.",
            ["partition"],
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "memae_ts_dead_letters_truncated",
            "Dead letters whose value was cut to fit the dead-letter topic.",
            registry=r,
        )
        self.dead_letters_dropped = Counter(
            "memae_ts_dead_letters_dropped",
            "Dead letters the dead-letter topic refused even without their value (dropped, logged).",
            registry=r,
        )

    def dead_letter_cut(self, action: str) -> None:
        """Count a dead letter ``truncated`` or ``dropped`` by the sink (see KafkaSink)."""
        (self.dead_letters_truncated if action == "truncated" else self.dead_letters_dropped).inc()

    def set_model(self, version: str, sensors: Iterable[str], window: int, engine: str) -> None:
        self.model_info.info(
            {"version": version, "sensors": ",".join(sensors), "window": str(window), "engine": engine}
        )

    def observe_score(
        self, asset: str, score: float, normalised: float, anomaly: bool, anomalies: int | None = None
    ) -> None:
        """Latest score of ``asset``; ``anomalies`` anomalous windows since the last call
        (default: this one, if anomalous)."""
        self.score.labels(asset=asset).set(score)
        self.normalised.labels(asset=asset).set(normalised)
        self.flag.labels(asset=asset).set(1.0 if anomaly else 0.0)
        counter = self.anomalies.labels(asset=asset)  # created at 0 on first sight
        count = int(anomaly) if anomalies is None else anomalies
        if count:
            counter.inc(count)

    def set_lag(self, lags: dict[int, int]) -> None:
        for partition, lag in lags.items():
            self.lag.labels(partition=str(partition)).set(lag)

    def forget_assets(self, assets: Iterable[str]) -> None:
        """Drop the latest-score series of assets another daemon now scores, so a stale value
        here cannot keep an alert firing (``max by (asset)`` over daemons)."""
        for asset in assets:
            for metric in (self.score, self.normalised, self.flag):
                try:
                    metric.remove(asset)
                except KeyError:
                    pass

    def set_rebuild_span(self, spans: dict[int, int]) -> None:
        for partition, span in spans.items():
            self.rebuild_span.labels(partition=str(partition)).set(span)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop per-partition series of revoked partitions so sum() only counts what this
        daemon owns."""
        for p in partitions:
            for metric in (self.lag, self.rebuild_span):
                try:
                    metric.remove(str(p))
                except KeyError:
                    pass
