"""The alarm rule's state per asset, kept across a daemon restart or a rebalance.

Why: the window buffers are rebuilt from the committed rebuild point after a restart, but the
alarm rule (memae_ts.detection.alarms: the k-of-n history, on/off with hysteresis, the open
episode) used to start empty. An episode open at a deploy or a power cut then never got its
``closed`` record, the same fault got a second ``episode_id`` and a second count in
``memae_ts_alarm_episodes_total``, and a persisting fault was raised again only after k windows.
A restart must be invisible in the alarm history.

Where the state lives (written at every checkpoint where it changed, read back on assignment):

* **Kafka source**: a compacted topic ``<output topic>.alarm-state`` (created with
  ``cleanup.policy=compact`` if missing), key = asset. The records go through the sink's
  producer *before* its flush, so they are acknowledged before the input offsets are committed;
  in exactly-once mode they are in the checkpoint's transaction and a ``read_committed`` reader
  sees them only with the offsets. The topic is read from the beginning on every assignment, for
  the assets of the assigned partitions: a rebalance moves the state with the partition to the
  gateway that gets it.
* **MQTT / OPC UA source**: the ``state_dir`` journal (connectors/sources.py), written in the same
  file and the same atomic rename as the messages it rebuilds the windows from.

**At-least-once.** Each record says through which input offset it is valid (``through``: the
partition's next offset at the checkpoint that wrote it) and carries the asset's state at the
last *committed* checkpoint beside it (``base``, valid at ``base_through``). After a crash
between the state write and the offset commit, the readings from the committed offset on are
scored again (duplicates, by design): the rule then resumes from ``base`` and steps through them
again, giving the same alarms and episode records as the first time (duplicates of them, not new
ones). If no snapshot matches the committed offset (``ahead``: a record from a checkpoint whose
commit failed with no usable base), the newer state is taken and the re-scored windows it already
covers do not step the rule a second time (counted: ``memae_ts_alarm_state_windows_skipped_total``;
their score records carry the alarm flag of that state).

A record that cannot be used (unreadable, another format version, another alarm rule or sensor
count) is logged and counted in ``memae_ts_alarm_states_unusable_total{reason}`` and the asset
starts empty, as before; never an exit.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

from memae_ts.detection.alarms import AlarmStateError

log = logging.getLogger(__name__)

RECORD_VERSION = 1
TOPIC_SUFFIX = ".alarm-state"

Key = tuple[str, str]  # (model section, asset)


def encode_record(
    asset: str, model: str, topic: str, partition: int, through: int | None, state: dict[str, Any],
    base_through: int | None, base: dict[str, Any] | None,
) -> bytes:  # fmt: skip
    """One asset's stored alarm state (see the module docstring for the fields)."""
    record = {
        "v": RECORD_VERSION, "asset": asset, "model": model, "topic": topic, "partition": partition,
        "through": through, "state": state, "base_through": base_through, "base": base,
    }  # fmt: skip
    return orjson.dumps(record)


def decode_record(value: bytes | None) -> dict[str, Any]:
    """The record's fields; ValueError for anything that is not a record of this version."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != RECORD_VERSION:
        version = data.get("v") if isinstance(data, dict) else type(data).__name__
        raise AlarmStateError("version", f"record format {version!r}, expected {RECORD_VERSION}")
    for name, kind in (("asset", str), ("partition", int), ("state", dict)):
        if not isinstance(data.get(name), kind):
            raise ValueError(f"field {name!r} missing or not a {kind.__name__}")
    for name in ("through", "base_through"):
        if data.get(name) is not None and not isinstance(data[name], int):
            raise ValueError(f"field {name!r} is not an offset")
    return data


class AlarmStateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.restored = Counter(
            "memae_ts_alarm_states_restored",
            "Assets whose alarm rule state was taken over after a restart or assignment, by how: "
            "exact (valid at the committed offset), rewound (the state at the committed offset; "
            "re-scored windows step the rule again), ahead (a newer state; re-scored windows it "
            "covers are skipped).",
            ["result"],
            registry=registry,
        )
        self.unusable = Counter(
            "memae_ts_alarm_states_unusable",
            "Stored alarm states not used (the asset starts empty): unreadable, another format "
            "version, another alarm rule or sensor count, or malformed.",
            ["reason"],
            registry=registry,
        )
        self.saved = Counter(
            "memae_ts_alarm_states_saved",
            "Alarm rule states written at checkpoints (one per asset whose state changed).",
            registry=registry,
        )
        self.continued = Counter(
            "memae_ts_alarm_state_stretches_continued",
            "Assets whose first window after a restart or assignment continued the stretch of the "
            "restored alarm state (rebuilt windows overlapping the last one scored), so no gap.",
            registry=registry,
        )
        self.skipped = Counter(
            "memae_ts_alarm_state_windows_skipped",
            "Re-scored windows (after a crash before a commit) that did not step the alarm rule "
            "again because the restored state already covered them.",
            registry=registry,
        )
        for result in ("exact", "rewound", "ahead"):
            self.restored.labels(result=result)
        for reason in ("unreadable", "version", "rule", "sensors", "malformed"):
            self.unusable.labels(reason=reason)


class KafkaStateStore:
    """The compacted state topic; records are produced through the daemon's sink (so the
    sink's flush acknowledges them, and a transactional sink commits them with the offsets)."""

    exact = False  # records carry offsets to compare with the committed ones

    def __init__(
        self, client: dict[str, Any], topic: str, input_topic: str, produce: Callable[..., None],
        *, read_timeout_s: float = 20.0,
    ) -> None:  # fmt: skip
        self.client = client  # librdkafka properties (connectors/kafka_sink.producer_config)
        self.topic = topic
        self.input_topic = input_topic
        self._produce = produce
        self.read_timeout_s = read_timeout_s

    def ensure_topic(self) -> None:
        """Create the state topic, compacted, if it does not exist. A failure is logged: the
        producer may still auto-create it (not compacted: it then grows with every checkpoint)."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({**self.client, "logger": log, "error_cb": lambda error: None})
        future = admin.create_topics(
            [NewTopic(self.topic, num_partitions=1, config={"cleanup.policy": "compact"})], request_timeout=8
        )[self.topic]
        try:
            future.result(timeout=10)  # a broker still starting: the daemon's start is not held long
            log.info("alarm state topic created", extra={"topic": self.topic})
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                log.error("alarm state topic not created", extra={"topic": self.topic, "error": str(exc)})
        except Exception as exc:  # a timeout: the broker is checked again by the first produce
            log.error("alarm state topic not created", extra={"topic": self.topic, "error": repr(exc)})

    def write(self, records: list[tuple[str, bytes]]) -> None:
        for asset, value in records:
            self._produce(self.topic, asset.encode(), value, None)

    def read(self, partitions: set[int], metrics: AlarmStateMetrics) -> dict[str, dict[str, Any]]:
        """The latest record per asset of ``partitions`` of the input topic, reading the whole
        state topic from its start (compaction keeps it to about one record per asset)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

        consumer = Consumer(
            {
                **self.client,
                "group.id": f"memae-ts-alarm-state-{uuid.uuid4().hex}",  # never joined nor committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "logger": log,
                "log_level": 2,
            }
        )
        found: dict[str, dict[str, Any]] = {}
        t0 = time.monotonic()
        deadline = t0 + self.read_timeout_s
        try:
            meta = consumer.list_topics(self.topic, timeout=self.read_timeout_s)
            numbers = meta.topics[self.topic].partitions
            tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in numbers]
            todo = set()
            for tp in tps:
                low, high = consumer.get_watermark_offsets(tp, timeout=self.read_timeout_s)
                if high > low:
                    todo.add(tp.partition)
            consumer.assign(tps)
            while todo and time.monotonic() < deadline:
                for m in consumer.consume(500, 0.2):
                    error = m.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            todo.discard(m.partition())
                        else:
                            log.warning("alarm state topic: consumer error", extra={"error": error.str()})
                        continue
                    key = (m.key() or b"").decode(errors="replace")
                    try:
                        record = decode_record(m.value())
                    except (AlarmStateError, ValueError) as exc:
                        # The latest record of the asset is not usable: an older one is stale.
                        found.pop(key, None)
                        reason = exc.reason if isinstance(exc, AlarmStateError) else "unreadable"
                        metrics.unusable.labels(reason=reason).inc()
                        log.error(
                            "alarm state record unreadable; the asset starts empty",
                            extra={"key": key[:200], "error": str(exc)},
                        )
                        continue
                    if record.get("topic") == self.input_topic and record["partition"] in partitions:
                        found[record["asset"]] = record  # the latest wins (topic order)
                    elif record["asset"] in found and record.get("topic") == self.input_topic:
                        del found[record["asset"]]  # moved to a partition not ours
            if todo:
                log.error(
                    "alarm state topic not read to its end in time; assets without a state read start empty",
                    extra={"topic": self.topic, "timeout_s": self.read_timeout_s},
                )
        except KafkaException as exc:
            log.error("alarm state topic unreadable; assets start empty", extra={"error": str(exc)})
        finally:
            consumer.close()
        log.info(
            "alarm states read",
            extra={"topic": self.topic, "assets": len(found), "seconds": round(time.monotonic() - t0, 3)},
        )
        return found


class LocalStateStore:
    """The MQTT/OPC UA source's ``state_dir`` journal: the states are saved with the journal
    (one file, one rename), so they always match the messages it restores."""

    exact = True

    def __init__(self, source: Any) -> None:
        self.source = source
        restored = getattr(source, "restored_alarm_state", None) or {}
        source.alarm_state = dict(restored)

    def write(self, records: list[tuple[str, bytes]]) -> None:
        for asset, value in records:
            self.source.alarm_state[asset] = orjson.loads(value)

    def read(self, partitions: set[int], metrics: AlarmStateMetrics) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for asset, raw in (getattr(self.source, "restored_alarm_state", None) or {}).items():
            try:
                found[asset] = decode_record(orjson.dumps(raw))
            except AlarmStateError as exc:
                metrics.unusable.labels(reason=exc.reason).inc()
            except (ValueError, TypeError) as exc:
                metrics.unusable.labels(reason="unreadable").inc()
                log.error(
                    "alarm state unreadable; the asset starts empty",
                    extra={"asset": asset[:100], "error": repr(exc)},
                )
        self.source.restored_alarm_state = None  # once: a later rewind keeps the live state
        return found


def store_for(source: Any, sink: Any) -> KafkaStateStore | LocalStateStore | None:
    """The store matching the daemon's source: the state_dir journal of an MQTT/OPC UA source,
    the state topic next to the Kafka sink's output topic for a Kafka source; None (states are
    not kept, logged) for a local source without state_dir or a Kafka source without a Kafka sink."""
    from memae_ts.connectors.kafka_sink import KafkaSink
    from memae_ts.connectors.sources import LocalSource

    if isinstance(source, LocalSource):
        if source.state_file is None:
            return None  # the source already says that nothing survives a restart
        return LocalStateStore(source)
    kafka = next((s for s in getattr(sink, "sinks", [sink]) if isinstance(s, KafkaSink)), None)
    input_topic = getattr(source, "topic", None)
    if kafka is None or not isinstance(input_topic, str):
        log.warning("alarm states are not kept across a restart: no Kafka sink to write them with")
        return None
    store = KafkaStateStore(kafka._client, kafka.topic + TOPIC_SUFFIX, input_topic, kafka._produce)
    store.ensure_topic()
    return store


class AlarmStateKeeper:
    """What the stream processor calls (connectors/processor.py): which assets' states changed
    since the last checkpoint, their snapshots at the last committed one, and the restore on
    assignment. Keys are (model section, asset)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = AlarmStateMetrics(registry)
        self.store: KafkaStateStore | LocalStateStore | None = None
        self._touched: dict[Key, int] = {}  # stepped since the last save -> its partition
        self._signatures: dict[Key, tuple[Any, ...]] = {}  # AlarmState.signature() last written
        self._base: dict[Key, tuple[int | None, dict[str, Any] | None]] = {}  # at the last commit
        self._unconfirmed: dict[Key, tuple[int, dict[str, Any]]] = {}  # written, commit pending
        self._committed_at: dict[int, int] = {}  # partition -> last committed (or taken-over) offset
        self._to_restore: dict[int, int] = {}  # partition -> committed offset, rewound, not restored yet
        self._skip: dict[Key, int] = {}  # windows of readings below this offset were stepped already
        # Restored assets whose first window is not made yet: [end of the last window stepped
        # before the restart, accepted rows after it seen since] (see continued()).
        self.watching: dict[Key, list[float]] = {}

    def attach(self, source: Any, sink: Any) -> None:
        try:
            self.store = store_for(source, sink)
        except Exception as exc:  # never a reason not to score
            log.error("alarm states are not kept across a restart", extra={"error": repr(exc)})
            self.store = None

    # -- while scoring ------------------------------------------------------------------------

    def first_new(self, model: str, asset: str, offsets: np.ndarray) -> int:
        """How many leading windows (by their reading's offset) the restored state covers
        already: they must not step the rule again (see ``ahead`` in the module docstring)."""
        until = self._skip.get((model, asset))
        if until is None:
            return 0
        done = int(np.searchsorted(offsets, until))  # offsets ascend within an asset
        if done < len(offsets):
            del self._skip[(model, asset)]
        if done:
            self.metrics.skipped.inc(done)
        return done

    def continued(self, lane: Any, asset: str, made: Any, row_ts: np.ndarray) -> np.ndarray | None:
        """``made.starts`` of an asset's windows, with the first window made in its rebuilt buffer
        *not* a stretch start when it continues the stretch the restored state was in.

        Why: a rebuilt buffer starts a series at its first re-read row and flags its first window
        as a stretch start, which the rule treats as a gap (closing the open episode, ``gap``).
        After a complete rebuild that window overlaps the last window stepped before the restart
        (windows never span a break), so it continues that stretch, as offline scoring sees it.
        Overlap: at most ``window - 1`` accepted rows after that window's end up to this one's
        (a resampled model: at most ``window - 1`` grid periods between their ends)."""
        key = (lane.name, asset)
        watch = self.watching.get(key)
        starts = made.starts
        if watch is None:
            return starts
        t_prev, seen = watch
        model = lane.model
        accepted = np.ones(len(row_ts), dtype=bool)
        for at, _ in made.rejected:
            if at < len(accepted):
                accepted[at] = False
        if not len(made.ends):
            if model.resample is None:
                watch[1] = seen + int(np.count_nonzero(accepted & (row_ts > t_prev)))
            return starts
        del self.watching[key]
        if starts is None or not starts[0]:
            return starts
        if model.resample is not None:
            assert made.ts is not None
            span = (model.window - 1) * model.resample.period_seconds
            continues = float(made.ts[0]) - t_prev <= span + 1e-6
        else:
            upto = int(made.ends[0]) + 1
            seen += int(np.count_nonzero(accepted[:upto] & (row_ts[:upto] > t_prev)))
            continues = seen <= model.window - 1
        if continues:
            starts = starts.copy()
            starts[0] = False
            self.metrics.continued.inc()
        return starts

    def touched(self, model: str, asset: str, partition: int) -> None:
        if self.store is not None:
            self._touched[(model, asset)] = partition

    # -- checkpoint ---------------------------------------------------------------------------

    def save(self, lanes: list[Any], next_offsets: dict[int, int]) -> None:
        """Hand the changed states to the store; called before the sink's flush, so they are
        acknowledged (or in the transaction) before the offsets are committed."""
        if self.store is None or not self._touched:
            return
        by_name = {lane.name: lane for lane in lanes}
        records: list[tuple[str, bytes]] = []
        for (model, asset), partition in self._touched.items():
            lane = by_name.get(model)
            state = None if lane is None or lane.model is None else lane.alarms.states.get(asset)
            if state is None:
                continue
            signature = state.signature()
            if self._signatures.get((model, asset)) == signature:
                continue  # unchanged but for the time (a quiet asset): the stored record holds
            snap = state.snapshot()
            self._signatures[(model, asset)] = signature
            through = next_offsets.get(partition, self._committed_at.get(partition))
            base_through, base = self._base.get((model, asset), (self._committed_at.get(partition), None))
            topic = _topic(self.store)
            value = encode_record(asset, model, topic, partition, through, snap, base_through, base)
            records.append((asset, value))
            if through is not None:
                self._unconfirmed[(model, asset)] = (through, snap)
        self._touched.clear()
        if records:
            self.store.write(records)
            self.metrics.saved.inc(len(records))

    def committed(self, ok: bool, next_offsets: dict[int, int], transactional: bool) -> None:
        """After the commit: what was written is now the base; an aborted transaction discards it."""
        if ok:
            for key, (through, snap) in self._unconfirmed.items():
                self._base[key] = (through, snap)
            self._unconfirmed.clear()
            self._committed_at.update(next_offsets)
        elif transactional:
            self._unconfirmed.clear()
            self._signatures.clear()

    # -- rebalance ----------------------------------------------------------------------------

    def rewound(self, partition: int, committed: int) -> None:
        """A partition assigned (or rewound after an aborted transaction) from ``committed``."""
        self._to_restore[partition] = committed
        self._committed_at[partition] = committed

    def forget(self, assets: dict[str, list[str]]) -> None:
        """Assets (per model section) whose partitions were revoked."""
        for model, names in assets.items():
            for asset in names:
                key = (model, asset)
                for table in (
                    self._touched, self._signatures, self._base, self._unconfirmed, self._skip, self.watching
                ):
                    table.pop(key, None)  # type: ignore[attr-defined]

    def restore(self, lane_of: Callable[[str], Any]) -> None:
        """Take over the stored states of the assets of the partitions rewound since the last
        call (before any of their windows is scored). ``lane_of(asset)``: the lane serving it."""
        if not self._to_restore:
            return
        partitions, self._to_restore = self._to_restore, {}
        if self.store is None:
            return
        for asset, record in self.store.read(set(partitions), self.metrics).items():
            lane = lane_of(asset)
            if lane is None or getattr(lane, "model", None) is None:
                continue
            committed = partitions.get(record["partition"])
            through, base_through = record.get("through"), record.get("base_through")
            snap, result = record["state"], "exact"
            if not self.store.exact and committed is not None and through is not None and through > committed:
                if base_through is not None and base_through <= committed:
                    snap, result = record.get("base"), "rewound"
                else:
                    result = "ahead"
            key = (lane.name, asset)
            lane.alarms.forget([asset])
            if snap is not None:
                state = lane.alarms.state(asset)
                try:
                    state.restore(snap)
                except AlarmStateError as exc:
                    lane.alarms.forget([asset])
                    self.metrics.unusable.labels(reason=exc.reason).inc()
                    log.error(
                        "alarm state not usable; the asset starts empty",
                        extra={"asset": asset, "reason": exc.reason, "error": str(exc)},
                    )
                    continue
            self.metrics.restored.labels(result=result).inc()
            if result == "ahead":
                self._skip[key] = int(through)
            if snap is not None:
                self._signatures[key] = lane.alarms.state(asset).signature()
                if snap.get("last_time") is not None:
                    self.watching[key] = [float(snap["last_time"]), 0]
            self._base[key] = (through if result == "ahead" else committed, snap)
            log.info(
                "alarm state restored",
                extra={"asset": asset, "model": lane.name, "how": result},
            )


def _topic(store: Any) -> str:
    return getattr(store, "input_topic", "")
