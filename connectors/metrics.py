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
from dataclasses import dataclass
from typing import Any

import numpy as np
from memae_ts.connectors.messages import REASONS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


# Tail probabilities from "as common as the median window" down to one in a billion.
_TAIL_BUCKETS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


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


@dataclass(slots=True)
class AssetSeries:
    """One asset's drift series (:meth:`EdgeMetrics.asset_series`)."""

    readings: Any
    last_reading: Any
    last_seen: Any
    out_of_range: list[Any]

    def observe(self, count: int, newest_ts: float, outside: np.ndarray | None, now: float) -> None:
        self.readings.inc(count)
        self.last_reading.set(newest_ts)
        self.last_seen.set(now)
        if outside is not None:
            for i in outside.nonzero()[0].tolist():
                self.out_of_range[i].inc(int(outside[i]))


class EdgeMetrics:
    """Every series the daemon exports; series that can be pre-created start at 0."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Per asset, the labelled children observe_score / observe_alarms set (a labels() lookup
        # costs several us, paid per asset and poll: with many slow assets a large share of the
        # daemon's CPU per reading). forget_assets drops them with the series they stand for.
        self._score_children: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._alarm_children: dict[str, tuple[Any, Any]] = {}
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
        self.windows_skipped = Counter(
            "memae_ts_windows_skipped_by_hop",
            "Complete windows not scored because of the scoring hop ([processing] hop).",
            registry=r,
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
        self.inference_cpu = Counter(
            "memae_ts_inference_cpu_seconds",
            "CPU time of the engine thread in engine calls (a runtime with [model] threads > 1 also "
            "spends CPU on its own threads, not counted here).",
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
        self.model_info = Info(
            "memae_ts_model", "The model bundle each [[model]] section serves.", ["model"], registry=r
        )
        self.model_reloads = Counter(
            "memae_ts_model_reloads",
            "Model loads after start (SIGHUP, or a changed bundle with model.reload = on-change), "
            "by result (error: refused, the old model keeps serving).",
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
        self.rebalance_stuck = Counter(
            "memae_ts_kafka_rebalance_stuck",
            "Kafka consumers replaced because the group join did not complete within "
            "kafka.rebalance_stuck_seconds while the broker answered (docs/edge.md).",
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
        self.transactions_aborted = Counter(
            "memae_ts_transactions_aborted",
            "Exactly-once transactions aborted, their readings scored again: the commit refused "
            "(a rebalance) or their records not acknowledged in time (a broker outage).",
            ["reason"],
            registry=r,
        )
        for reason in ("commit_refused", "commit_unanswered", "records_unacknowledged"):
            self.transactions_aborted.labels(reason)  # exported at 0 from the start
        # Several models (docs/edge.md, "Several models") and drift (connectors/drift.py).
        self.model_up = Gauge(
            "memae_ts_model_up",
            "1 when the model of the [[model]] section is loaded and serving, 0 when its bundle "
            "cannot be loaded (its assets are dead-lettered as model_unavailable).",
            ["model"],
            registry=r,
        )
        self.model_trained = Gauge(
            "memae_ts_model_training_end_timestamp_seconds",
            "Unix time of the newest reading the served model was trained on (its age).",
            ["model"],
            registry=r,
        )
        self.training_range_known = Gauge(
            "memae_ts_training_range_known",
            "1 when the bundle stores its training range per sensor (out-of-range readings are "
            "counted), 0 for a bundle fitted before it did (refit it to get the drift metric).",
            ["model"],
            registry=r,
        )
        self.asset_readings = Counter(
            "memae_ts_asset_readings",
            "Readings of the asset parsed for its model (not counting re-reads to rebuild windows).",
            ["asset", "model"],
            registry=r,
        )
        self.out_of_range = Counter(
            "memae_ts_out_of_range_readings",
            "Readings of the asset whose sensor value lies outside that sensor's training range.",
            ["asset", "model", "sensor"],
            registry=r,
        )
        self.asset_last_reading = Gauge(
            "memae_ts_asset_last_reading_timestamp_seconds",
            "Timestamp (Unix time) carried by the newest reading of the asset.",
            ["asset", "model"],
            registry=r,
        )
        self.asset_last_seen = Gauge(
            "memae_ts_asset_last_seen_timestamp_seconds",
            "Unix time at which this daemon last consumed a reading of the asset (asset silent: "
            "time() minus this).",
            ["asset", "model"],
            registry=r,
        )
        self.score_p95 = Gauge(
            "memae_ts_anomaly_score_normalised_p95",
            "95th percentile of the asset's normalised scores over the last hour of reading time "
            "(12 five-minute slots, log bins: within 5 %; connectors/drift.py).",
            ["asset", "model"],
            registry=r,
        )

        self.memory_drift = Gauge(
            "memae_ts_memory_drift_ratio",
            "Drift following: the largest drift of a memory slot since training, relative to the "
            "slot's trained norm (0 = trained memory; capped at model.follow_max_drift).",
            ["model"],
            registry=r,
        )
        self.memory_follow_windows = Counter(
            "memae_ts_memory_follow_windows_total",
            "Drift following: scored windows that updated the memory (used) or were too close to "
            "the threshold to (refused).",
            ["model", "outcome"],
            registry=r,
        )
        self.memory_updates = Counter(
            "memae_ts_memory_updates_total", "Drift following: memory updates applied.", ["model"], registry=r
        )
        self.memory_updates_rejected = Counter(
            "memae_ts_memory_updates_rejected_total",
            "Drift following: memory moves not applied because the windows they were learned from "
            "reconstructed worse with them.",
            ["model"],
            registry=r,
        )
        self.memory_capped = Counter(
            "memae_ts_memory_slot_moves_capped_total",
            "Drift following: slot moves shortened by the bound on total drift.",
            ["model"],
            registry=r,
        )
        self.memory_resets = Counter(
            "memae_ts_memory_resets_total",
            "Drift following: resets to the trained memory (SIGHUP with an unchanged bundle).",
            ["model"],
            registry=r,
        )
        self._follow_seen: dict[str, dict[str, int]] = {}
        # The alarm rule (memae_ts.detection.alarms) and tail probabilities (memae_ts.detection.tails).
        self.alarm_episodes = Counter(
            "memae_ts_alarm_episodes",
            "Alarm episodes opened: the alarm rule (persistence, hysteresis, minimum duration) raised an "
            "alarm, per asset.",
            ["asset"],
            registry=r,
        )
        self.alarm_episodes_closed = Counter(
            "memae_ts_alarm_episodes_closed",
            "Alarm episodes closed, per asset and end reason (cleared: back below the clear level; "
            "gap: the data broke off while the alarm was on).",
            ["asset", "end_reason"],
            registry=r,
        )
        self.alarm_active = Gauge(
            "memae_ts_alarm_active",
            "1 while the alarm rule has the asset's alarm on, else 0 (what an alarm panel shows).",
            ["asset"],
            registry=r,
        )
        self.tail_probability = Gauge(
            "memae_ts_tail_probability",
            "Share of normal windows expected at or above the asset's latest score (the same meaning for "
            "every model: rank assets by it, alert on it across the fleet).",
            ["asset"],
            registry=r,
        )
        self.window_tail_probability = BatchHistogram(
            "memae_ts_window_tail_probability",
            "Tail probability of every scored window (all assets and models).",
            buckets=_TAIL_BUCKETS,
            registry=r,
        )

    def observe_alarms(
        self,
        asset: str,
        active: bool,
        opened: int,
        closed: Iterable[str],
        tail_probabilities: np.ndarray | None,
    ) -> None:
        """The alarm state after a slice of ``asset``'s windows: episodes opened, the end reasons
        of those closed, the latest tail probability (and all of them into the histogram)."""
        children = self._alarm_children.get(asset)
        if children is None:  # the episodes counter is created at 0 on first sight
            children = self._alarm_children[asset] = (
                self.alarm_active.labels(asset=asset),
                self.alarm_episodes.labels(asset=asset),
            )
        gauge, counter = children
        gauge.set(1.0 if active else 0.0)
        if opened:
            counter.inc(opened)
        for reason in closed:
            self.alarm_episodes_closed.labels(asset=asset, end_reason=reason).inc()
        if tail_probabilities is not None and len(tail_probabilities):
            self.tail_probability.labels(asset=asset).set(float(tail_probabilities[-1]))
            finite = tail_probabilities[np.isfinite(tail_probabilities)]
            if finite.size:
                self.window_tail_probability.observe_many(finite)

    def set_follow(self, model: str, drift: float, counts: dict[str, int]) -> None:
        """Drift-following state of ``model``; ``counts`` are the follower's running totals
        (FollowCounts), turned into counter increments here."""
        self.memory_drift.labels(model=model).set(drift)
        seen = self._follow_seen.setdefault(model, {})
        targets = {
            "windows_used": self.memory_follow_windows.labels(model=model, outcome="used"),
            "windows_refused": self.memory_follow_windows.labels(model=model, outcome="refused"),
            "updates": self.memory_updates.labels(model=model),
            "updates_rejected": self.memory_updates_rejected.labels(model=model),
            "slot_moves_capped": self.memory_capped.labels(model=model),
            "resets": self.memory_resets.labels(model=model),
        }
        for key, counter in targets.items():
            now, before = counts.get(key, 0), seen.get(key, 0)
            delta = now - before if now >= before else now  # a reloaded model's follower starts at 0
            if delta > 0:
                counter.inc(delta)
            seen[key] = now

    def dead_letter_cut(self, action: str) -> None:
        """Count a dead letter ``truncated`` or ``dropped`` by the sink (see KafkaSink)."""
        (self.dead_letters_truncated if action == "truncated" else self.dead_letters_dropped).inc()

    def set_model(
        self,
        version: str,
        sensors: Iterable[str],
        window: int,
        engine: str,
        model: str = "default",
        training_end: float | None = None,
        range_known: bool = False,
    ) -> None:
        sensors = list(sensors)
        self.model_info.labels(model=model).info(
            {"version": version, "sensors": ",".join(sensors), "window": str(window), "engine": engine}
        )
        self.model_up.labels(model=model).set(1)
        if training_end is not None:
            self.model_trained.labels(model=model).set(training_end)
        self.training_range_known.labels(model=model).set(1 if range_known else 0)

    def model_failed(self, model: str) -> None:
        """A [[model]] whose bundle cannot be loaded (at start: nothing else is known of it)."""
        self.model_up.labels(model=model).set(0)

    def observe_readings(
        self,
        asset: str,
        model: str,
        count: int,
        newest_ts: float,
        out_of_range: dict[str, int] | None,
        now: float,
    ) -> None:
        """``count`` live readings of ``asset`` (the newest so far at ``newest_ts``), with per
        sensor how many were outside the training range (None: range unknown, nothing counted)."""
        self.asset_readings.labels(asset=asset, model=model).inc(count)
        self.asset_last_reading.labels(asset=asset, model=model).set(newest_ts)
        self.asset_last_seen.labels(asset=asset, model=model).set(now)
        if out_of_range is not None:
            for sensor, n in out_of_range.items():
                child = self.out_of_range.labels(asset=asset, model=model, sensor=sensor)  # 0 at first sight
                if n:
                    child.inc(n)

    def asset_series(self, asset: str, model: str, sensors: Sequence[str] | None) -> AssetSeries:
        """The drift series of one asset, looked up once (the processor keeps them per asset:
        a label lookup per sensor and batch would cost more than parsing the readings).
        ``sensors``: the model's, when its training range is known (else no out-of-range series)."""
        return AssetSeries(
            self.asset_readings.labels(asset=asset, model=model),
            self.asset_last_reading.labels(asset=asset, model=model),
            self.asset_last_seen.labels(asset=asset, model=model),
            [self.out_of_range.labels(asset=asset, model=model, sensor=s) for s in sensors or ()],
        )

    def score_p95_from(self, asset: str, model: str, rolling: Any) -> None:
        """The asset's p95 gauge reads ``rolling.quantile(0.95)`` when scraped (NaN before any
        score): one quantile per asset and scrape instead of one per batch."""

        def read() -> float:
            value = rolling.quantile(0.95)
            return math.nan if value is None else value

        self.score_p95.labels(asset=asset, model=model).set_function(read)

    def set_score_p95(self, asset: str, model: str, value: float) -> None:
        self.score_p95.labels(asset=asset, model=model).set(value)

    def observe_score(
        self, asset: str, score: float, normalised: float, anomaly: bool, anomalies: int | None = None
    ) -> None:
        """Latest score of ``asset``; ``anomalies`` anomalous windows since the last call
        (default: this one, if anomalous)."""
        children = self._score_children.get(asset)
        if children is None:  # the anomalies counter is created at 0 on first sight
            children = self._score_children[asset] = (
                self.score.labels(asset=asset),
                self.normalised.labels(asset=asset),
                self.flag.labels(asset=asset),
                self.anomalies.labels(asset=asset),
            )
        score_gauge, normalised_gauge, flag, counter = children
        score_gauge.set(score)
        normalised_gauge.set(normalised)
        flag.set(1.0 if anomaly else 0.0)
        count = int(anomaly) if anomalies is None else anomalies
        if count:
            counter.inc(count)

    def set_lag(self, lags: dict[int, int]) -> None:
        for partition, lag in lags.items():
            self.lag.labels(partition=str(partition)).set(lag)

    def forget_assets(self, assets: Iterable[str]) -> None:
        """Drop the latest-score series of assets another daemon now scores, so a stale value
        here cannot keep an alert firing (``max by (asset)`` over daemons)."""
        assets = list(assets)
        for asset in assets:
            self._score_children.pop(asset, None)
            self._alarm_children.pop(asset, None)
            for metric in (self.score, self.normalised, self.flag, self.alarm_active, self.tail_probability):
                try:
                    metric.remove(asset)
                except KeyError:
                    pass
        # And the drift gauges, whatever the model: a stale last-seen time here would
        # make the asset look silent. Counters stay (rate() over daemons stays right).
        gone = set(assets)
        for metric, names in (
            (self.asset_last_reading, ("asset", "model")),
            (self.asset_last_seen, ("asset", "model")),
            (self.score_p95, ("asset", "model")),
        ):
            for family in metric.collect():
                for sample in family.samples:
                    if sample.labels.get("asset") in gone:
                        try:
                            metric.remove(*(sample.labels[n] for n in names))
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
