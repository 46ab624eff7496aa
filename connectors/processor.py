"""The processing step between source and sink: parse → buffer → score in batches → publish,
then a checkpoint in a fixed order.

Commit order (written down because at-least-once depends on it):

1. every score record and dead letter of the processed readings is handed to the producer;
2. the producer is flushed: all of them acknowledged by the broker (``acks=all``);
3. only then the input offsets (last processed + 1) are committed, with the rebuild point.

A crash anywhere before 3 re-reads the readings and re-scores them (duplicates, never gaps).
"""

from __future__ import annotations

import fnmatch
import gc
import itertools
import logging
import operator
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from memae_ts.connectors.alarm_state import AlarmStateKeeper
from memae_ts.connectors.buffers import WindowBuffers
from memae_ts.connectors.drift import RollingQuantile, TrainingRange
from memae_ts.connectors.kafka_sink import KafkaSink
from memae_ts.connectors.kafka_source import KafkaSource
from memae_ts.connectors.messages import (
    InvalidMessage,
    ParsedBatch,
    ReadingParser,
    encode_episode,
    encode_scores,
    key_asset,
)
from memae_ts.connectors.metrics import AssetSeries, EdgeMetrics
from memae_ts.connectors.resampling import ResampledBuffers

from memae_ts.detection.alarms import AlarmRule, AlarmTracker
from memae_ts.detection.hop import NO_PREVIOUS, carry_starts, hop_interval_us, hop_keep, to_microseconds
from memae_ts.io.resample import ResampleSpec

log = logging.getLogger(__name__)


# What the processor reads of a source's records (C-implemented getters: no Python frame per record).
_PARTITION = operator.attrgetter("partition")
_OFFSET = operator.attrgetter("offset")
_KEY = operator.attrgetter("key")
_VALUE = operator.attrgetter("value")
_TIMESTAMP = operator.attrgetter("timestamp")


def _columns(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[bytes | None], list[bytes | None]]:
    """Partitions, offsets, keys and values of a poll: the source's own ``columns`` when it has
    them (the Kafka source reads them straight from librdkafka's messages), else read from
    each record's attributes (MQTT, OPC UA, tests)."""
    columns = getattr(records, "columns", None)
    if columns is not None:
        return columns  # type: ignore[no-any-return]
    n = len(records)
    return (
        np.fromiter(map(_PARTITION, records), np.int64, n),
        np.fromiter(map(_OFFSET, records), np.int64, n),
        list(map(_KEY, records)),
        list(map(_VALUE, records)),
    )


def _timestamps(records: Sequence[Any], positions: list[int]) -> np.ndarray:
    """The produce times (ms) of the records at ``positions``."""
    own = getattr(records, "timestamps", None)
    if own is not None:
        return own(positions)  # type: ignore[no-any-return]
    return np.fromiter(map(_TIMESTAMP, map(records.__getitem__, positions)), np.int64, len(positions))


def _group(assets: list[str]) -> dict[str, np.ndarray]:
    """Positions of each asset's readings, assets in order of first appearance, positions
    ascending (a stable sort of per-asset codes instead of a Python append per reading)."""
    code = {a: k for k, a in enumerate(dict.fromkeys(assets))}
    if len(code) <= 1:
        if not code:
            return {}
        return {assets[0]: np.arange(len(assets), dtype=np.int64)}
    codes = np.fromiter(map(code.__getitem__, assets), np.int64, len(assets))
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(code)))[:-1]
    return dict(zip(code, np.split(order, bounds), strict=True))


def _slices(groups: dict[str, np.ndarray], step: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Consecutive assets of ``groups`` in slices of at least ``step`` readings (the last one
    whatever remains). An asset with more than ``step`` readings goes in pieces of ``step``
    into consecutive slices (one busy asset still overlaps its windowing with the engine)."""
    part: list[tuple[str, np.ndarray]] = []
    size = 0
    for asset, js in groups.items():
        for lo in range(0, len(js), step):
            piece = js[lo : lo + step]
            part.append((asset, piece))
            size += len(piece)
            if size >= step:
                yield part
                part, size = [], 0
    if part:
        yield part


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
    name: str = "default"  # the [[model]] section: metrics label and score record field
    training_range: TrainingRange | None = None  # None: an old bundle, drift not measured
    training_end: float | None = None  # Unix time of the newest training reading
    # The bundle's alarm rule (memae_ts.detection.alarms; defaults for a bundle without one) and tail
    # model (memae_ts.detection.tails; None for a bundle without one: no tail probabilities).
    alarm_rule: AlarmRule = field(default_factory=AlarmRule)
    tail: Any = None
    # The sampling period a scoring hop counts in (memae_ts.detection.hop.model_period_seconds; None:
    # unknown, then only hop = 1 can serve it).
    period_seconds: float | None = None

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
class ModelRoute:
    """One [[model]] section: the assets it serves (names or shell patterns; empty: every asset)
    and its model, or None with the reason when its bundle could not be loaded (its assets are
    then dead letters ``model_unavailable`` until a reload succeeds)."""

    name: str
    patterns: tuple[str, ...]
    model: ServedModel | None
    error: str = ""


class _Lane:
    """What one model needs in the stream: its parser, window buffers and drift state.

    Lanes share the source, the sink and the commit; each owns the buffers of its assets, so
    reloading one model (even with other windowing) leaves the others' buffers alone."""

    def __init__(self, route: ModelRoute, config: ProcessingConfig, metrics: EdgeMetrics) -> None:
        self.name = route.name
        self.patterns = route.patterns
        self.config = config
        self.metrics = metrics
        self.error = route.error
        self.model: ServedModel | None = None
        # Per partition: history re-read for another lane's rebuild, below this offset, that
        # this lane already has in its buffers (see StreamProcessor._on_rewound).
        self.skip_until: dict[int, int] = {}
        self.quantiles: dict[str, RollingQuantile] = {}
        self.newest: dict[str, float] = {}
        self.series: dict[str, AssetSeries] = {}
        self._expected = False  # literal asset names given a last-seen series (expect_named_assets)
        if route.model is not None:
            self.install(route.model)
        else:
            metrics.model_failed(self.name)

    def install(self, model: ServedModel) -> None:
        model.name = self.name
        self.model = model
        self.error = ""
        self.series = {}  # the sensors or the training range may differ
        self.expect_named_assets()
        self.parser = ReadingParser(model.sensors)
        self.buffers: WindowBuffers | ResampledBuffers
        if model.resample is not None:
            self.buffers = ResampledBuffers(
                model.resample, model.window, len(model.sensors), max_assets=self.config.max_assets
            )
            # An asset silent for longer than the limit holds nothing for the rows after its
            # silence except the first `limit` of them; it must not pin the rewind point.
            self.stale_after: float | None = model.resample.limit()
        else:
            self.buffers = WindowBuffers(
                model.window,
                len(model.sensors),
                max_gap_seconds=model.max_gap_seconds,
                max_fill_rows=model.max_fill_rows,
                backwards_tolerance_seconds=self.config.backwards_tolerance_seconds,
                max_assets=self.config.max_assets,
            )
            self.stale_after = model.max_gap_seconds
        self.skip_until = {}
        # Per asset, the alarm rule's state (memae_ts.detection.alarms), carried from slice to slice.
        self.alarms = AlarmTracker(model.alarm_rule, len(model.sensors))
        # Scoring hop (memae_ts.detection.hop): the interval in microseconds (None: every window); per
        # asset the time of its last row (history rows included, so a rebuild keeps the phase)
        # and whether a left-out window started a stretch (the next scored one says so).
        hop = self.config.hop
        self.hop_us = None if hop <= 1 else hop_interval_us(hop, model.period_seconds, "processing.hop")
        self.grid_us = None if model.resample is None else round(model.resample.period_seconds * 1e6)
        self.hop_last: dict[str, int] = {}
        self.hop_pending: dict[str, bool] = {}
        self.announce()

    def expect_named_assets(self) -> None:
        """Assets named literally in the section (not patterns) get their last-seen series at
        once, set to now: one that never sends is then reported silent (MemaeTsAssetSilent)
        instead of having no series at all. Across daemons ``max by (asset)`` picks the owner's
        real time. Done once per lane, so a reload does not restart the silence clock."""
        if self._expected:
            return
        self._expected = True
        now = time.time()
        for name in self.patterns:
            if not any(c in name for c in "*?["):
                self.metrics.asset_last_seen.labels(asset=name, model=self.name).set(now)

    def announce(self) -> None:
        m = self.model
        assert m is not None
        self.metrics.set_model(
            m.version,
            m.sensors,
            m.window,
            m.engine_name,
            self.name,
            m.training_end,
            m.training_range is not None,
        )

    def serves(self, asset: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(asset, p) for p in self.patterns)

    def observe(self, asset: str, ts: np.ndarray, values: np.ndarray) -> None:
        """Drift metrics of live readings of ``asset`` (connectors/drift.py)."""
        m = self.model
        assert m is not None
        newest = max(float(ts.max()), self.newest.get(asset, -np.inf))
        self.newest[asset] = newest
        series = self.series.get(asset)
        if series is None:
            known = m.sensors if m.training_range is not None else None
            series = self.series[asset] = self.metrics.asset_series(asset, self.name, known)
        outside = m.training_range.outside(values) if m.training_range is not None else None
        series.observe(len(ts), newest, outside, time.time())

    def observe_assets(
        self, by_asset: list[tuple[str, np.ndarray]], ts: np.ndarray, values: np.ndarray
    ) -> None:
        """:meth:`observe` of every asset of a slice (``ts[js]``, ``values[js]`` its readings),
        the array work done once for the slice instead of once per asset: with many slow assets
        a few numpy calls per asset and poll were a large share of the CPU per reading."""
        m = self.model
        assert m is not None
        if not by_asset:
            return
        rows = np.concatenate([js for _, js in by_asset]) if len(by_asset) > 1 else by_asset[0][1]
        firsts = np.cumsum([0, *(len(js) for _, js in by_asset[:-1])])
        newest_ts = np.maximum.reduceat(ts[rows], firsts).tolist()
        outside: list[np.ndarray | None] = [None] * len(by_asset)
        if m.training_range is not None:
            out_rows = m.training_range.outside_rows(values[rows])
            counts = np.add.reduceat(out_rows, firsts, axis=0, dtype=np.int64)
            for k in np.flatnonzero(counts.any(axis=1)).tolist():
                outside[k] = counts[k]
        now = time.time()
        for (asset, js), newest, out in zip(by_asset, newest_ts, outside, strict=True):
            newest = max(newest, self.newest.get(asset, -np.inf))
            self.newest[asset] = newest
            series = self.series.get(asset)
            if series is None:
                known = m.sensors if m.training_range is not None else None
                series = self.series[asset] = self.metrics.asset_series(asset, self.name, known)
            series.observe(len(js), newest, out, now)

    def observe_scores(self, asset: str, ts: np.ndarray, normalised: np.ndarray) -> None:
        q = self.quantiles.get(asset)
        if q is None:
            q = self.quantiles[asset] = RollingQuantile()
            # Read at scrape time, not computed per batch (the gauge is removed with the asset).
            self.metrics.score_p95_from(asset, self.name, q)
        q.add(ts, normalised)

    def forget(self, partitions: set[int]) -> list[str]:
        if self.model is None:
            return []
        gone = self.buffers.assets_in(partitions)
        self.buffers.drop_partitions(partitions)
        self.alarms.forget(gone)  # the next owner starts their alarm state empty
        for asset in gone:
            self.hop_last.pop(asset, None)
            self.hop_pending.pop(asset, None)
            self.quantiles.pop(asset, None)
            self.newest.pop(asset, None)
            self.series.pop(asset, None)  # its gauges are removed: look them up anew
        for p in partitions:
            self.skip_until.pop(p, None)
        return gone


@dataclass
class ProcessingConfig:
    top_sensors: int = 3
    backwards_tolerance_seconds: float = 0.0
    max_assets: int = 10_000
    poll_timeout_ms: int = 200
    flush_timeout_s: float = 60.0
    score_chunk: int = 1024  # readings per slice of a poll; one engine call per slice
    allowed_assets: tuple[str, ...] = ()  # names or shell patterns; empty: every asset
    hop: int = 1  # score every hop-th window end per asset, on the clock (memae_ts.detection.hop)
    # At most one checkpoint (flush + commit) per this many seconds; 0: after every poll.
    # ([kafka] commit_interval_ms; a transactional source commits every poll regardless.)
    commit_interval_s: float = 0.0


@dataclass
class _Scoring:
    """A slice of a poll whose windows are being scored on the engine thread."""

    model: ServedModel
    lane: _Lane
    result: Future[tuple[np.ndarray, np.ndarray, Any]]
    assets: list[str]
    ts: np.ndarray
    kafka_ms: np.ndarray
    starts: np.ndarray  # per window: the first of a stretch (the alarm rule forgets there)
    # Per window, the partition and offset of the reading that completed it (alarm state).
    partitions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


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
        model: ServedModel | Sequence[ModelRoute],
        metrics: EdgeMetrics,
        config: ProcessingConfig | None = None,
    ) -> None:
        """``model``: one model serving every asset, or one route per [[model]] section."""
        self.config = config or ProcessingConfig()
        self.sink = sink
        self.metrics = metrics
        routes = [ModelRoute(model.name, (), model)] if isinstance(model, ServedModel) else list(model)
        self.lanes = [_Lane(route, self.config, metrics) for route in routes]
        self._routes: dict[bytes | None, _Lane | InvalidMessage] = {}
        self._pending = _Pending()
        self._last_checkpoint = time.monotonic()
        self._lags_seen: dict[int, int] = {}
        # Per assigned partition, the next offset to process live (read by the lag monitor
        # thread: replaced, never mutated in place, so a reader sees a whole dict).
        self.positions: dict[int, int] = {}
        self.engine_seconds = 0.0
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._keys: dict[str, bytes] = {}
        self._rewinding: _Lane | None = None
        # The alarm rule's state per asset across restarts and rebalances (connectors/alarm_state.py).
        self.alarm_states = AlarmStateKeeper(metrics.registry)
        # The source calls back into us on rebalance, so it is built last.
        self.source: KafkaSource = source_factory(self._on_revoked, self._on_assigned, self._on_rewound)
        self.alarm_states.attach(self.source, sink)

    @property
    def model(self) -> ServedModel:
        """The first model (the only one without [[model]] sections)."""
        model = self.lanes[0].model
        assert model is not None
        return model

    def lane(self, name: str) -> _Lane:
        return next(lane for lane in self.lanes if lane.name == name)

    def _route(self, key: bytes | None) -> _Lane | InvalidMessage:
        """The lane serving the asset a message key names, or why none does (cached per key)."""
        found = self._routes.get(key)
        if found is None:
            if len(self._routes) > 100_000:  # a producer bug sending a new key per message
                self._routes = {}
            try:
                asset = key_asset(key, self.config.allowed_assets)
                found = next((lane for lane in self.lanes if lane.serves(asset)), None)
                if found is None:
                    found = InvalidMessage(
                        "no_model", f"asset {asset!r} is in no [[model]] section's assets"[:200]
                    )
            except InvalidMessage as exc:
                found = exc
            self._routes[key] = found
        return found

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
        if self._checkpoint_due():
            self.checkpoint()
        else:
            self._acknowledge()
        return len(records)

    def _checkpoint_due(self) -> bool:
        """The commit policy: after every poll, or at most every ``commit_interval_s``. A
        transactional source commits every poll: its scores are visible to read_committed
        readers only then."""
        interval = self.config.commit_interval_s
        if interval <= 0 or getattr(self.source, "transactional", False):
            return True
        return time.monotonic() - self._last_checkpoint >= interval

    def _acknowledge(self) -> None:
        """Between two commits: flush the poll's score records (acknowledged before the next
        poll, as with a commit after every poll, so a record is sent at once rather than
        after the producer's linger) and observe their end-to-end latency at the ack; the
        offsets stay pending until the next checkpoint."""
        pending = self._pending
        if not pending.produced_ms:
            return
        self.sink.flush(self.config.flush_timeout_s)
        produced = np.concatenate(pending.produced_ms) / 1000.0
        self.metrics.end_to_end.observe_many(np.maximum(0.0, time.time() - produced))
        self.metrics.scores_published.inc(len(produced))
        pending.produced_ms = []

    def process(self, records: Sequence[Any]) -> None:
        """Parse, window and score one poll's records; dead-letter what cannot be used.

        Why slices on two threads: the engine releases the GIL, so while it scores one slice
        of the poll on the worker thread, this thread windows the next slice and encodes and
        hands the previous one to the producer (and the broker stores it meanwhile).

        Why a slice is a set of whole assets (all their readings of the poll), not a run of
        records: the per-asset work (buffers, hop, alarm rule, drift and score metrics) costs
        about as much for one reading as for a hundred, so an asset cut into every slice of a
        poll paid it once per slice: at hop 10 that was half of the CPU per reading outside
        the engine (bench/stream.py). Each asset's readings stay in order; only the order in
        which assets are handled within a poll differs from the input's.
        """
        # A slice holds about `score_chunk` windows to score: with a hop only every hop-th
        # reading makes one, so it takes hop times as many readings.
        step = max(1, self.config.score_chunk) * max(1, self.config.hop)
        # Partitions assigned (or rewound) since the last call: their assets' alarm states first.
        self.alarm_states.restore(self._lane_of)
        in_flight: deque[_Scoring] = deque()
        # No cyclic garbage collection while a poll is processed: parsing it creates two
        # containers per reading (the message's dict and its values), which kept triggering
        # collections, every tenth of them of the older generations and some of the whole heap,
        # 2-3 us of CPU per reading (measured with gc.callbacks, 100,000 readings). What a poll
        # makes is freed by reference counting when it is done; the collector runs again
        # after it (the state it was in is restored, so a caller that disabled it keeps it so).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for scoring in self._prepare(records, step):
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
        finally:
            if collecting:
                gc.enable()

    def _prepare(self, records: Sequence[Any], step: int) -> Iterator[_Scoring]:
        """Route a poll to its models; parse each model's part; window it in slices of whole
        assets of about ``step`` readings, starting to score each slice as it is made (one
        engine call per slice); then dead-letter and count what cannot be used.

        History records (re-read after a rewind to rebuild windows) refill buffers only: they
        were scored, dead-lettered and counted before. A model whose buffers were not rewound
        (another model's reload) skips them: it holds those rows already.
        """
        n = len(records)
        partitions, offsets, keys, values = _columns(records)
        history = self.source.history_mask(partitions, offsets)
        rebuilt = int(history.sum())
        if rebuilt:
            self.metrics.rebuild_readings.inc(rebuilt)

        invalid: list[tuple[int, InvalidMessage]] = []
        by_lane: dict[int, list[int]] = {}
        lane_index = {id(lane): k for k, lane in enumerate(self.lanes)}
        routes = list(map(self._routes.get, keys))  # cached per key; None: not looked up yet
        first = routes[0] if n else None
        if isinstance(first, _Lane) and first.model is not None and routes.count(first) == n:
            by_lane[lane_index[id(first)]] = list(range(n))  # one model serves the whole poll
            routes = []
        for i, route in enumerate(routes):
            if route is None:
                route = self._route(keys[i])
            if isinstance(route, InvalidMessage):
                invalid.append((i, route))
            elif route.model is None:
                detail = f"model {route.name!r} is not loaded ({route.error})"[:200]
                invalid.append((i, InvalidMessage("model_unavailable", detail)))
            else:
                by_lane.setdefault(lane_index[id(route)], []).append(i)

        for k, members in by_lane.items():
            lane = self.lanes[k]
            pos = np.asarray(members, dtype=np.int64)
            if lane.skip_until and history[pos].any():
                held = np.zeros(len(pos), dtype=bool)
                for p, until in lane.skip_until.items():
                    held |= (partitions[pos] == p) & (offsets[pos] < until)
                pos = pos[~(held & history[pos])]
            if not len(pos):
                continue
            if len(pos) == n:  # the whole poll, in order
                parsed = lane.parser.parse_batch(keys, values)
            else:
                parsed = lane.parser.parse_batch([keys[i] for i in pos], [values[i] for i in pos])
            invalid.extend((int(pos[j]), exc) for j, exc in parsed.invalid)
            for assets in _slices(_group(parsed.assets), step):
                scoring = self._prepare_lane(
                    lane, records, pos, parsed, assets, partitions, offsets, history, invalid
                )
                if scoring is not None:
                    yield scoring

        for i, exc in sorted(invalid, key=lambda item: item[0]):
            if history[i]:
                continue
            r = records[i]
            self.metrics.invalid.labels(reason=exc.reason).inc()
            self.sink.dead_letter(r.key, r.value, exc.reason, exc.detail, (r.topic, r.partition, r.offset))
        self._advance(partitions[~history], offsets[~history])

    def _prepare_lane(
        self,
        lane: _Lane,
        records: Sequence[Any],
        pos: np.ndarray,
        parsed: ParsedBatch,
        by_asset: list[tuple[str, np.ndarray]],
        partitions: np.ndarray,
        offsets: np.ndarray,
        history: np.ndarray,
        invalid: list[tuple[int, InvalidMessage]],
    ) -> _Scoring | None:
        """One slice of one model's records: the readings of the assets ``by_asset`` (their
        positions in ``parsed``, whose reading j is ``records[pos[parsed.index[j]]]``)."""
        model = lane.model
        assert model is not None
        windows: list[np.ndarray] = []
        scored: list[np.ndarray] = []  # positions in `parsed` of the readings that completed a window
        ends_ts: list[np.ndarray] = []  # the times those windows end at (grid times if resampled)
        starts: list[np.ndarray] = []  # which of those windows start a stretch
        skipped = 0  # live windows the scoring hop leaves out
        # Without re-read history in the poll (the usual case) every row and window is live:
        # the per-asset masks are skipped (numpy calls on a few rows cost more than their work,
        # paid per asset and poll; with many slow assets that is most of the CPU per reading).
        replay = bool(history.any())
        if not replay:
            lane.observe_assets(by_asset, parsed.ts, parsed.values)
        for asset, js in by_asset:
            rec = pos[parsed.index[js]]
            row_ts, row_values = parsed.ts[js], parsed.values[js]
            if replay:
                live_rows = ~history[rec]
                if live_rows.any():
                    lane.observe(asset, row_ts[live_rows], row_values[live_rows])
            made = lane.buffers.extend(asset, int(partitions[rec[-1]]), row_ts, row_values, offsets[rec])
            if made.rejected:
                invalid.extend((int(rec[at]), exc) for at, exc in made.rejected)
            if self.alarm_states.watching:  # after a restore: does the stretch continue?
                made.starts = self.alarm_states.continued(lane, asset, made, row_ts)
            if len(made.ends):
                live = ~history[rec[made.ends]] if replay else None  # None: every window
                first = np.zeros(len(made.ends), dtype=bool) if made.starts is None else made.starts
                end_ts = row_ts[made.ends] if made.ts is None else made.ts
                if lane.hop_us is not None:
                    previous = self._hop_previous(lane, asset, made, end_ts, row_ts)
                    keep = hop_keep(to_microseconds(end_ts), previous, lane.hop_us)
                    live_keep = keep if live is None else keep[live]
                    skipped += int(np.count_nonzero(~live_keep))
                    flags, lane.hop_pending[asset] = carry_starts(
                        live_keep, first if live is None else first[live], lane.hop_pending.get(asset, False)
                    )
                    live = keep if live is None else live & keep
                    first = first.copy()
                    first[live] = flags
                if live is None:
                    windows.append(made.windows)
                    scored.append(js[made.ends])
                    ends_ts.append(end_ts)
                    starts.append(first)
                else:
                    windows.append(made.windows[live])
                    scored.append(js[made.ends[live]])
                    ends_ts.append(end_ts[live])
                    starts.append(first[live])
            elif lane.hop_us is not None and lane.grid_us is None:
                self._hop_previous(lane, asset, made, None, row_ts)  # remember the last row

        if skipped:
            self.metrics.windows_skipped.inc(skipped)
        order = np.concatenate(scored) if scored else np.empty(0, dtype=np.int64)
        if not len(order):
            return None
        return _Scoring(
            model=model,
            lane=lane,
            result=self._engine_thread.submit(self._run_engine, model.engine, np.concatenate(windows)),
            assets=[parsed.assets[j] for j in order],
            ts=np.concatenate(ends_ts),
            kafka_ms=_timestamps(records, pos[parsed.index[order]].tolist()),
            starts=np.concatenate(starts),
            partitions=partitions[pos[parsed.index[order]]],
            offsets=offsets[pos[parsed.index[order]]],
        )

    @staticmethod
    def _hop_previous(
        lane: _Lane, asset: str, made: Any, end_ts: np.ndarray | None, row_ts: np.ndarray
    ) -> np.ndarray:
        """Per window of ``made``, the time of the row before its end (memae_ts.detection.hop): the grid
        row one period earlier for a resampled model; else the asset's previous accepted row,
        which may be from an earlier slice or a re-read history row (so a rebuild keeps the phase)."""
        if lane.grid_us is not None:
            assert end_ts is not None
            return to_microseconds(end_ts) - lane.grid_us
        times = to_microseconds(row_ts)
        if not made.rejected:  # the usual case, in fewer numpy calls (paid per asset and poll)
            before = np.empty(len(times), dtype=np.int64)
            before[0] = lane.hop_last.get(asset, NO_PREVIOUS)
            before[1:] = times[:-1]
            lane.hop_last[asset] = int(times[-1])
            return before[made.ends] if end_ts is not None else before
        accepted = np.ones(len(row_ts), dtype=bool)
        for at, _ in made.rejected:
            accepted[at] = False
        before = np.full(len(row_ts), NO_PREVIOUS, dtype=np.int64)
        kept = np.flatnonzero(accepted)
        if len(kept):
            before[kept[0]] = lane.hop_last.get(asset, NO_PREVIOUS)
            before[kept[1:]] = times[kept[:-1]]
            lane.hop_last[asset] = int(times[kept[-1]])
        return before[made.ends] if end_ts is not None else before

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
        scores, contributions, analysed = scoring.result.result()
        novelty = level = None
        if analysed is not None:  # a bundle with operating modes or drift following (detection.modes)
            novelty, level = model.engine.levels(analysed, model.threshold)  # type: ignore[attr-defined]
        alarm, tail, episodes = self._alarms(scoring, scores, contributions, level)
        values = encode_scores(
            assets, scoring.ts, scores, model.threshold, contributions, model.sensors, model.version,
            self.config.top_sensors, model_name=model.name,
            modes=None if novelty is None else analysed.mode, novelty=novelty, alarm_level=level,
            alarm=alarm, tail_probability=tail,
        )  # fmt: skip
        keys = self._keys
        self.sink.publish_many([keys.get(a) or keys.setdefault(a, a.encode()) for a in assets], values)
        if episodes:
            self._publish_episodes(model, episodes)
        self._pending.produced_ms.append(scoring.kafka_ms)

        # Gauges show the latest window per asset: one update per asset and slice.
        normalised = scores / model.threshold
        anomalous = (normalised if level is None else level) >= 1.0
        names = np.array(assets, dtype=object)
        starts = np.flatnonzero(np.concatenate([[True], names[1:] != names[:-1]]))
        counts = np.add.reduceat(anomalous.astype(np.int64), starts)
        lasts = np.append(starts[1:], len(assets)) - 1
        for first, last, count in zip(starts.tolist(), lasts.tolist(), counts.tolist(), strict=True):
            self.metrics.observe_score(
                assets[last], float(scores[last]), float(normalised[last]), bool(anomalous[last]), count
            )
            group = slice(first, last + 1)
            scoring.lane.observe_scores(assets[last], scoring.ts[group], normalised[group])
        self.metrics.windows_scored.inc(len(assets))
        self.metrics.last_reading.set(float(scoring.ts.max()))
        if getattr(model.engine, "follower", None) is not None:
            self.observe_follow(model.name)

    def _alarms(
        self, scoring: _Scoring, scores: np.ndarray, contributions: np.ndarray, level: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, list[tuple[str, Any]]]:
        """Step each asset's alarm rule through its windows of the slice (the same
        memae_ts.detection.alarms.AlarmState as `memae-ts score`), count and gauge the result. Returns
        the alarm per window, the tail probabilities (None without a tail model) and the
        episode events ("opened"/"closed", episode) in order."""
        model, assets = scoring.model, scoring.assets
        watched = scores / model.threshold if level is None else np.asarray(level, dtype=np.float64)
        tail = None if model.tail is None else model.tail.tail_probability(scores)
        alarm = np.zeros(len(assets), dtype=bool)
        events: list[tuple[str, Any]] = []
        names = np.array(assets, dtype=object)
        bounds = [*np.flatnonzero(np.concatenate([[True], names[1:] != names[:-1]])).tolist(), len(assets)]
        tracker = scoring.lane.alarms
        keeper = self.alarm_states
        for lo, hi in itertools.pairwise(bounds):
            state = tracker.state(assets[lo])
            if len(scoring.offsets):
                keeper.touched(scoring.lane.name, assets[lo], int(scoring.partitions[lo]))
                # Re-scored windows a restored state covers already do not step it twice.
                seen = keeper.first_new(scoring.lane.name, assets[lo], scoring.offsets[lo:hi])
                if seen:
                    alarm[lo : lo + seen] = state.active
                    lo += seen
            done = state.run(scoring.ts[lo:hi], watched[lo:hi], contributions[lo:hi], scoring.starts[lo:hi])
            alarm[lo:hi] = done.alarm
            # In window order: an episode closed by a gap precedes one opened after it.
            for episode in done.closed:
                if episode in done.opened:
                    events.append(("opened", episode))
                events.append(("closed", episode))
            events.extend(("opened", e) for e in done.opened if e not in done.closed)
            self.metrics.observe_alarms(
                assets[lo],
                state.active,
                len(done.opened),
                [e.end_reason for e in done.closed],
                None if tail is None else tail[lo:hi],
            )
        return alarm, tail, events

    def _publish_episodes(self, model: ServedModel, events: list[tuple[str, Any]]) -> None:
        """Episode records to the episodes topic, key = asset (when the sink has one)."""
        publish = getattr(self.sink, "publish_episodes", None)
        if publish is None:  # a sink without an episodes topic: counted in the metrics only
            if not getattr(self, "_said_no_episodes", False):
                log.warning("this sink publishes no episode records; see memae_ts_alarm_episodes_total")
                self._said_no_episodes = True
            return
        keys = self._keys
        publish(
            [keys.get(e.asset) or keys.setdefault(e.asset, e.asset.encode()) for _, e in events],
            [
                encode_episode(kind, e, model.sensors, model.version, model.name, self.config.top_sensors)
                for kind, e in events
            ],
        )

    def observe_follow(self, name: str) -> None:
        """Drift-following metrics of the model of lane ``name`` (memae_ts.detection.following)."""
        model = self.lane(name).model
        follower = None if model is None else getattr(model.engine, "follower", None)
        if follower is not None:
            self.metrics.set_follow(name, follower.drift()["max"], follower.counts.to_dict())

    def _run_engine(self, engine: Engine, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """Scores and contributions; with a MemoryScorer (modes, drift following) also its
        ModeScores, else None."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        analysed = None
        if hasattr(engine, "analyse") and hasattr(engine, "levels"):  # memae_ts.detection.modes.MemoryScorer
            analysed = engine.analyse(windows)
            scores, contributions = analysed.scores, analysed.contributions
        else:
            scores, contributions = engine.score(windows)
        elapsed = time.perf_counter() - t0
        self.metrics.inference_cpu.inc(time.thread_time() - cpu0)
        self.engine_seconds += elapsed
        self.metrics.inference.observe(elapsed)
        return np.asarray(scores, dtype=np.float64), np.asarray(contributions), analysed

    def checkpoint(self) -> None:
        """Flush the sink (all acks in), then commit offsets. No-op when nothing is pending."""
        pending = self._pending
        self._last_checkpoint = time.monotonic()
        if not pending.next_offsets:
            return
        # Alarm states first: acknowledged by the same flush (or in the same transaction).
        self.alarm_states.save(self.lanes, pending.next_offsets)
        published = self.sink.flush(self.config.flush_timeout_s)
        now = time.time()
        if pending.produced_ms:
            produced = np.concatenate(pending.produced_ms) / 1000.0
            self.metrics.end_to_end.observe_many(np.maximum(0.0, now - produced))
        rebuild_from: dict[int, int] = {}
        for lane in self.lanes:  # the oldest offset any model still needs
            if lane.model is not None:
                for p, off in lane.buffers.rebuild_offsets(lane.stale_after).items():
                    rebuild_from[p] = min(rebuild_from.get(p, off), off)
        committed = self.source.commit(pending.next_offsets, rebuild_from)
        transactional = bool(getattr(self.source, "transactional", False))
        self.alarm_states.committed(committed, pending.next_offsets, transactional)
        self.metrics.set_rebuild_span(
            {p: off - min(off, rebuild_from.get(p, off)) for p, off in pending.next_offsets.items()}
        )
        if committed or not transactional:  # an aborted transaction's scores were discarded
            self.metrics.scores_published.inc(sum(len(p) for p in pending.produced_ms))
        self.metrics.readings_in_progress.set(0)
        self._lags_seen.update(pending.next_offsets)
        self.metrics.set_lag(self.source.lags(self._lags_seen))
        log.debug("checkpoint", extra={"offsets": pending.next_offsets, "acked": published})
        self._pending = _Pending()
        if committed:
            self.metrics.commits.inc()
            self.metrics.last_processed.set(now)
        elif not transactional:
            # Scores are out; commit these offsets with the next checkpoint if we still own
            # the partitions (a revocation in between drops them: the new owner re-reads).
            # (Exactly-once: the transaction was aborted with its scores, and the source has
            # rewound to the committed offsets: nothing is kept.)
            self._pending.next_offsets = {
                p: off for p, off in pending.next_offsets.items() if p in self.source.assigned
            }

    # -- rebalance and reload -----------------------------------------------------------

    def _on_revoked(self, partitions: set[int]) -> None:
        # Called inside poll(), between two steps. With a commit interval, readings processed
        # since the last checkpoint are pending: checkpoint them now, while we still own their
        # partitions, so the next owner does not score them again.
        # Not for a transactional source: it commits every poll, so nothing is pending between
        # steps, and it calls this from a refused commit (inside checkpoint), whose score
        # records the broker has discarded: committing their offsets then would lose them.
        transactional = getattr(self.source, "transactional", False)
        if self._pending.next_offsets.keys() & partitions and not transactional:
            self.checkpoint()
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})
        for p in partitions:  # offsets whose commit failed: the next owner re-reads them
            self._pending.next_offsets.pop(p, None)
        for lane in self.lanes:
            gone = lane.forget(partitions)
            self.alarm_states.forget({lane.name: gone})
            self.metrics.forget_assets(gone)
        for p in partitions:
            self._lags_seen.pop(p, None)
        self.positions = {p: off for p, off in self.positions.items() if p not in partitions}
        self.metrics.forget_partitions(partitions)

    def _on_assigned(self, partitions: set[int]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})

    def _on_rewound(self, partition: int, committed: int, start: int, wanted: int) -> None:
        """A partition was sought back to rebuild its windows (see KafkaSource.rewind).

        A rewind for one model's reload (``self._rewinding``) rebuilds that model's buffers
        only: the others hold every row before ``committed`` already and skip the re-read ones.
        Any other rewind (an assignment) rebuilds every model's buffers of the partition."""
        if self._rewinding is None:  # an assignment: the stored alarm states are read back
            self.alarm_states.rewound(partition, committed)
        for lane in self.lanes:
            if self._rewinding is None or lane is self._rewinding:
                lane.skip_until.pop(partition, None)
            else:
                lane.skip_until[partition] = committed
        self.metrics.rebuilds.inc()
        if start > wanted:
            self.metrics.rebuild_truncated.inc()
        self.positions = {**self.positions, partition: committed}

    def _lane_of(self, asset: str) -> _Lane | None:
        route = self._route(asset.encode())
        return route if isinstance(route, _Lane) else None

    def swap_model(self, model: ServedModel, name: str | None = None) -> None:
        """Serve ``model`` for the [[model]] section ``name`` (default: the first) from the next
        batch on. Its buffers are kept when the windowing is the same; otherwise they are rebuilt
        from the committed rebuild points, and only its own: the other models keep their buffers
        and skip the re-read history. A model that was not loaded starts with empty buffers (its
        readings until now were dead letters)."""
        lane = self.lanes[0] if name is None else self.lane(name)
        old = lane.model
        if old is None:
            lane.install(model)
            return
        if model.same_windows(old):
            model.name = lane.name
            lane.model = model
            lane.series = {}  # the training range may differ
            if model.alarm_rule != old.alarm_rule:  # another rule: its state starts empty
                lane.alarms = AlarmTracker(model.alarm_rule, len(model.sensors))
            lane.announce()
            return
        self.checkpoint()
        lane.install(model)
        self._rewinding = lane
        try:
            self.source.rewind(set(self.source.assigned))
        finally:
            self._rewinding = None

    def model_failed(self, name: str, error: str) -> None:
        """Record why the [[model]] ``name`` has no model (shown by the daemon's /readyz)."""
        lane = self.lane(name)
        lane.error = error
        if lane.model is None:
            self.metrics.model_failed(name)

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
