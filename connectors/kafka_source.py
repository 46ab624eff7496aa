"""Kafka source: a consumer-group member with manual commits and buffer rebuild on assignment.

Why commit metadata: a window needs the previous ``window - 1`` readings of its asset, which
sit before the committed offset. With every commit we store, per partition, the oldest offset
still needed to rebuild the window buffers (``rebuild_from``). When a partition is assigned
(start, restart after SIGKILL, rebalance), the consumer starts it at that offset; readings
between it and the committed offset are *history*: they refill buffers but are not scored
again. So no score is missing after a restart and none is duplicated unless the process died
between acknowledging scores and committing (at-least-once).

The rewind is bounded by ``max_rewind_messages`` (and by what log retention kept): that bounds
the time a restart spends re-reading. An asset whose window reaches further back (a slow asset
sharing a partition with busy ones) then starts a new warm-up and loses up to window - 1
scores; every such rewind is logged with how far it fell short and reported to
``on_rewound`` (a metric), and the processor exports each partition's rebuild span so an
operator sees it coming and can raise the bound.

Why cooperative-sticky assignment and static membership: with the eager protocol every member
gives up every partition at every rebalance and rebuilds all its windows; cooperative-sticky
moves only the partitions that change owner, and a static member (``group_instance_id``) that
restarts within the session timeout gets its partitions back with no rebalance at all.

Why librdkafka (confluent-kafka) and not kafka-python: under load (2 cores shared with the
broker) kafka-python 3's consumer was seen staying in a rebalance for minutes (its IO thread
spinning in the fetcher, every commit refused with RebalanceInProgress), and its fetch cost
about half the daemon's CPU outside the engine. librdkafka fetches and decodes on its own
threads, implements the cooperative protocol and static membership natively, and runs the
rebalance callbacks inside ``consume()`` on the calling thread, where the committed offsets
can be read and the start offsets handed to ``incremental_assign`` in one step (no paused
partitions waiting for the next poll). The at-least-once and the exactly-once source
(connectors/kafka_txn.py) are one class: only how an offset is committed differs.

Why a rebalance watchdog: a member whose join never completes while the broker answers (a
livelock in the group protocol, a member that stopped mid-rebalance) scores nothing and
commits nothing, yet looks alive to systemd. :class:`RebalanceWatchdog` reads librdkafka's
group state (``statistics``) and, after ``rebalance_stuck_s`` (default max(3 × session
timeout, 60 s)) without a completed join while the coordinator is reachable, the source logs
why, counts it (``on_stuck``) and replaces its consumer: the partitions it held are handled as
lost (revoked), the new consumer joins afresh and rebuilds from the committed rebuild points.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition
from memae_ts.connectors.kafka_sink import producer_config
from memae_ts.connectors.sources import SourceUnavailable

log = logging.getLogger(__name__)

_META_PREFIX = "memae-ts:rebuild_from="

# edge.toml's kafka.partition_assignment -> librdkafka's partition.assignment.strategy.
STRATEGIES = {"cooperative-sticky": "cooperative-sticky", "range": "range", "roundrobin": "roundrobin"}

# A commit refused for one of these is not retried here: the group is rebalancing, which only
# completes inside consume(), so the loop must get back to polling.
_REBALANCING = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._STATE,
        KafkaError._NO_OFFSET,
    }
)


def encode_metadata(rebuild_from: int) -> str:
    return f"{_META_PREFIX}{rebuild_from}"


def decode_metadata(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(_META_PREFIX):
        try:
            return int(metadata[len(_META_PREFIX) :])
        except ValueError:
            return None
    return None


class InstanceFenced(RuntimeError):
    """Another member of the group uses our ``group_instance_id`` (a configuration error)."""


def _fenced(error: KafkaError) -> bool:
    """librdkafka reports a fenced static member as a fatal error; the consumer then returns it
    as ``_FATAL`` with the original reason in the text."""
    if error.code() in (KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID):
        return True
    return error.code() == KafkaError._FATAL and "group.instance.id" in error.str()


def consumer_settings(
    client_config: dict[str, Any],
    group_id: str,
    *,
    auto_offset_reset: str = "earliest",
    partition_assignment: str = "cooperative-sticky",
    session_timeout_ms: int = 10_000,
    group_instance_id: str = "",
    read_committed: bool = False,
    statistics_interval_ms: int = 0,
    fetch_wait_max_ms: int = 500,
    fetch_min_bytes: int = 1,
) -> dict[str, Any]:
    """librdkafka consumer properties of both delivery modes (the daemon's and the bench's).

    ``fetch_wait_max_ms`` / ``fetch_min_bytes`` (``[kafka]`` keys of the same names, librdkafka's
    defaults 500 / 1): the broker answers a fetch once it holds ``fetch_min_bytes`` of new
    readings or ``fetch_wait_max_ms`` has passed. With 1 byte every batch a producer sends is
    one fetch request (a few hundred a second at moderate rates, each costing the broker CPU);
    a larger minimum lets the broker gather readings for up to the wait (docs/edge.md, section 5)."""
    settings: dict[str, Any] = {
        **producer_config(client_config),
        "group.id": group_id,
        # Offsets are committed only by the checkpoint (after the scores are acknowledged).
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": auto_offset_reset,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "partition.assignment.strategy": STRATEGIES[partition_assignment],
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(1000, session_timeout_ms // 4),
        # Notice a topic created (or partitions added) after we joined within 30 s, not 5 min.
        "topic.metadata.refresh.interval.ms": 30_000,
        "fetch.wait.max.ms": fetch_wait_max_ms,
        "fetch.min.bytes": fetch_min_bytes,
        "logger": log,
        "log_level": 2,  # librdkafka's own lines: critical and worse (errors come as errors)
    }
    if group_instance_id:
        settings["group.instance.id"] = group_instance_id
    if statistics_interval_ms > 0:
        settings["statistics.interval.ms"] = statistics_interval_ms
    return settings


class RebalanceWatchdog:
    """Says when a member has gone too long without a completed group join although the
    group coordinator is reachable (then a new consumer is the way out).

    Fed with librdkafka's statistics (``cgrp``): ``join_state`` is ``"steady"`` once a join
    (and its assignment) has completed; ``state`` is ``"up"`` while the coordinator answers.
    Time spent with the coordinator unreachable does not count: a broker outage is not a
    livelock, and the consumer reconnects by itself. ``"init"`` (no join under way) neither
    starts nor stops the clock: a member whose subscribed topic does not exist yet stays there
    and is not stuck, while a join that keeps failing and starting again passes through it."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self.clock = clock
        self.since: float | None = None  # when the current unfinished join was first seen
        self.state = "init"

    def observe(self, join_state: str, coordinator_up: bool) -> str | None:
        """The reason to replace the consumer, or None."""
        now = self.clock()
        self.state = join_state
        if join_state == "steady" or not coordinator_up:
            self.since = None
            return None
        if join_state == "init" and self.since is None:
            return None
        if self.since is None:
            self.since = now
            return None
        waited = now - self.since
        if waited <= self.limit_s:
            return None
        self.since = None
        return f"no completed group join for {waited:.0f} s (join state {join_state!r})"

    def observe_statistics(self, stats: dict[str, Any]) -> str | None:
        cgrp = stats.get("cgrp") or {}
        return self.observe(str(cgrp.get("join_state", "init")), cgrp.get("state") == "up")


class _Record:
    """The fields of a consumed message the processor reads (key, value, partition, ...)."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, message: Any) -> None:
        self.topic = message.topic()
        self.partition = message.partition()
        self.offset = message.offset()
        self.key = message.key()
        self.value = message.value()
        self.timestamp = message.timestamp()[1]


class _Polled(Sequence[_Record]):
    """One poll's messages, and the fields the processor reads of all of them as columns
    (``columns``, ``timestamps``: map of librdkafka's C getters, no Python object per
    message); an item is a :class:`_Record`, made on demand (a dead letter).

    Why: a ``_Record`` per message (six getter calls, one object) was a tenth of the daemon's
    CPU per reading outside the engine at ``hop = 10`` (bench/stream.py), and the processor
    then read four of its fields back one record at a time."""

    __slots__ = ("_messages", "columns")

    def __init__(self, messages: list[Any]) -> None:
        n = len(messages)
        self._messages = messages
        self.columns = (
            np.fromiter(map(Message.partition, messages), np.int64, n),
            np.fromiter(map(Message.offset, messages), np.int64, n),
            list(map(Message.key, messages)),
            list(map(Message.value, messages)),
        )

    def timestamps(self, positions: list[int]) -> np.ndarray:
        """The messages' timestamps (ms) at ``positions``."""
        stamps = map(Message.timestamp, map(self._messages.__getitem__, positions))
        return np.fromiter(map(_SECOND, stamps), np.int64, len(positions))

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, i: int) -> _Record:  # type: ignore[override]
        return _Record(self._messages[i])


_SECOND = operator.itemgetter(1)


class KafkaSource:
    """Consumes one input topic as a member of ``group_id``; nothing is auto-committed."""

    transactional = False
    read_committed = False

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        group_id: str,
        *,
        batch_size: int = 500,
        auto_offset_reset: str = "earliest",
        max_rewind_messages: int = 100_000,
        session_timeout_ms: int = 10_000,
        commit_timeout_s: float = 15.0,
        committed_timeout_s: float = 0.0,
        partition_assignment: str = "cooperative-sticky",
        group_instance_id: str = "",
        on_revoked: Callable[[set[int]], None] | None = None,
        on_assigned: Callable[[set[int]], None] | None = None,
        on_rewound: Callable[[int, int, int, int], None] | None = None,
        startup_timeout_s: float = 60.0,
        rebalance_stuck_s: float = 0.0,
        on_stuck: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        linger_ms: int = 0,
        fetch_wait_max_ms: int = 500,
        fetch_min_bytes: int = 1,
    ) -> None:
        self.topic = topic
        self.batch_size = batch_size
        self.linger_s = max(0, linger_ms) / 1000
        self.max_rewind_messages = max_rewind_messages
        self.commit_timeout_s = commit_timeout_s
        # How long the committed offsets are waited for at an assignment or a rewind (0: the
        # commit timeout). After a broker outage they can take longer than a commit: exactly-once
        # offsets still pending in a transaction the outage left open are unreadable until the
        # broker aborts it (transaction_timeout_ms plus its cleanup interval, 10 s, once back).
        self.committed_timeout_s = max(commit_timeout_s, committed_timeout_s)
        self.cooperative = partition_assignment == "cooperative-sticky"
        self.group_instance_id = group_instance_id
        self.replay_until: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.has_joined = False
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._on_rewound = on_rewound
        self._on_stuck = on_stuck
        limit = rebalance_stuck_s or max(3 * session_timeout_ms / 1000, 60.0)
        self.watchdog = RebalanceWatchdog(limit, clock)
        self._stuck: str | None = None
        self.consumers_replaced = 0
        self.settings = consumer_settings(
            client_config,
            group_id,
            auto_offset_reset=auto_offset_reset,
            partition_assignment=partition_assignment,
            session_timeout_ms=session_timeout_ms,
            group_instance_id=group_instance_id,
            read_committed=self.read_committed,
            # The watchdog's view of the group: a few hundred bytes of JSON, served in consume().
            statistics_interval_ms=int(min(5_000, max(500, limit * 1000 / 6))),
            fetch_wait_max_ms=fetch_wait_max_ms,
            fetch_min_bytes=fetch_min_bytes,
        )
        self.consumer = self._new_consumer(startup_timeout_s)

    def _new_consumer(self, startup_timeout_s: float) -> Consumer:
        """A consumer subscribed to the topic, once a broker answered. A broker that is
        restarting is waited for up to ``startup_timeout_s``; only then is it a reason to exit
        (status 1, and the supervisor tries again)."""
        consumer = Consumer({**self.settings, "stats_cb": self._on_statistics})
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                consumer.list_topics(self.topic, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
                break
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    consumer.close()
                    raise SourceUnavailable(f"no Kafka broker answered within {startup_timeout_s:.0f} s: "
                                            f"{exc.args[0].str()}") from None  # fmt: skip
                log.warning("broker not reachable yet; retrying", extra={"error": exc.args[0].str()})
                time.sleep(0.5)
        consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        return consumer

    # -- rebalance callbacks (run inside consume(), on this thread: blocking calls allowed) --

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in partitions}
        self.has_joined = True
        self.assigned |= parts
        if self._on_assigned is not None:
            self._on_assigned(parts)
        starts = self._start_offsets(consumer, parts)
        if self.cooperative:
            consumer.incremental_assign(starts)
        else:
            consumer.assign(starts)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The processor's ``on_revoked`` (in ``_forget``) checkpoints what it processed of
        these partitions (with ``[kafka] commit_interval_ms`` some may be pending) before they
        are unassigned: the new owner starts at our last offsets, scoring nothing twice."""
        self._forget({tp.partition for tp in partitions})
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Evicted from the group (session expired): the same as a revocation for us; the
        # commit of their offsets would fail anyway, and the new owner re-reads them.
        log.warning("partitions lost (evicted from the group)", extra={"partitions": sorted(
            tp.partition for tp in partitions)})  # fmt: skip
        self._revoked(consumer, partitions)

    def _forget(self, parts: set[int]) -> None:
        if self._on_revoked is not None and parts:
            self._on_revoked(parts)
        self.assigned -= parts
        for p in parts:
            self.replay_until.pop(p, None)

    def _on_statistics(self, text: str) -> None:
        reason = self.watchdog.observe_statistics(orjson.loads(text))
        if reason is not None:
            self._stuck = reason

    def _committed(self, consumer: Consumer, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets with metadata (retried, see :meth:`_patiently`)."""
        return list(self._patiently("committed offsets", lambda wait: consumer.committed(tps, timeout=wait)))

    def _log_start(self, consumer: Consumer, partition: int) -> int:
        """The partition's first offset (retried: right after a broker outage the client may not
        know the partition's leader yet)."""
        tp = TopicPartition(self.topic, partition)
        low, _ = self._patiently("log start", lambda wait: consumer.get_watermark_offsets(tp, timeout=wait))
        return int(low)

    def _patiently(self, what: str, call: Callable[[float], Any]) -> Any:
        """``call(timeout)``, retried while the coordinator or leader is moving for up to
        ``committed_timeout_s`` (then the error ends the daemon: status 1, systemd restarts it)."""
        deadline = time.monotonic() + self.committed_timeout_s
        while True:
            try:
                return call(max(1.0, min(10.0, deadline - time.monotonic())))
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning(f"{what} not read yet; retrying", extra={"error": exc.args[0].str()})
                time.sleep(0.2)

    def _start_offsets(self, consumer: Consumer, parts: set[int]) -> list[TopicPartition]:
        """Where to start reading each partition: its committed rebuild point (module
        docstring), bounded by ``max_rewind_messages`` and the log start."""
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if not tps:
            return []
        out = []
        for tp in self._committed(consumer, tps):
            if tp.partition not in self.assigned:
                # Revoked or lost while the offsets were read (librdkafka serves the rebalance
                # inside committed()): its next assignment rebuilds it.
                continue
            if tp.offset is None or tp.offset < 0:  # nothing committed: auto_offset_reset
                self.replay_until.pop(tp.partition, None)
                out.append(TopicPartition(self.topic, tp.partition, OFFSET_INVALID))
                continue
            low = self._log_start(consumer, tp.partition)
            wanted = decode_metadata(tp.metadata)
            wanted = tp.offset if wanted is None else min(wanted, tp.offset)
            start = min(max(wanted, tp.offset - self.max_rewind_messages, low), tp.offset)
            self.replay_until[tp.partition] = tp.offset
            log.info(
                "partition assigned",
                extra={"partition": tp.partition, "committed": tp.offset, "rebuild_from": start},
            )
            if start > wanted:
                # Assets whose windows reach back before `start` start a new warm-up.
                log.warning(
                    "rebuild truncated: windows reaching further back start a new warm-up",
                    extra={
                        "partition": tp.partition,
                        "rebuild_point": wanted,
                        "rebuild_from": start,
                        "messages_not_reread": start - wanted,
                        "cause": "log retention" if start == low else "max_rewind_messages",
                    },
                )
            if self._on_rewound is not None:
                self._on_rewound(tp.partition, tp.offset, start, wanted)
            out.append(TopicPartition(self.topic, tp.partition, start))
        return out

    # -- the Source protocol (connectors/sources.py) ----------------------------------------

    def poll(self, timeout_ms: int) -> _Polled:
        """Records of one poll (rebalance callbacks and statistics run in here too)."""
        if self._stuck is not None:  # before consuming: no records of partitions about to go
            self._replace_consumer(self._stuck)
        # librdkafka's consume(n, timeout) waits until it has n messages or the timeout passed:
        # at a low rate every poll would add the whole timeout to the latency. So: what is
        # queued now; if nothing, wait for one message; then, short of a full batch, wait at
        # most `linger_s` for more (`[kafka] linger_ms`, default 0). Why offer it: every poll
        # ends in a flush and a commit, so at moderate rates small polls cost the daemon more
        # CPU than the scoring. Measured (bench/stream.py --linger-ms 0,20, hop 10, 2,000
        # readings/s): 20 ms cut the daemon's CPU per reading from 297 to 165 us, raised p50
        # from 26 to 52 ms and left p99 where it was (~450 ms): the tail is not the checkpoints.
        messages = self.consumer.consume(self.batch_size, 0)
        if not messages:
            first = self.consumer.poll(timeout_ms / 1000)
            if first is not None:
                messages = [first]
        if messages and len(messages) < self.batch_size:
            messages.extend(self.consumer.consume(self.batch_size - len(messages), self.linger_s))
        errors = list(map(Message.error, messages))
        # By type: KafkaError's == against None sets a TypeError it does not raise (librdkafka's
        # Python client compares error codes), which surfaced later as a SystemError.
        if set(map(type, errors)) <= {type(None)}:
            return _Polled(messages)
        kept = []
        for m, error in zip(messages, errors, strict=True):
            if error is None:
                kept.append(m)
            elif _fenced(error):
                raise InstanceFenced(f"group_instance_id {self.group_instance_id!r}: {error.str()}")
            elif error.fatal() or error.code() == KafkaError._FATAL:
                raise KafkaException(error)  # the consumer is unusable: exit 1, systemd restarts
            else:
                log.warning("consumer error", extra={"error": error.str()})
        return _Polled(kept)

    def _replace_consumer(self, reason: str) -> None:
        """The watchdog fired: the partitions held are lost (revoked), the consumer is closed
        and a new one joins the group."""
        self._stuck = None
        self.consumers_replaced += 1
        log.error("consumer group join stuck; replacing the consumer", extra={
            "reason": reason, "partitions": sorted(self.assigned)})  # fmt: skip
        if self._on_stuck is not None:
            self._on_stuck(reason)
        self._forget(set(self.assigned))
        old, self.consumer = self.consumer, None  # type: ignore[assignment]
        try:
            old.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("old consumer did not close cleanly", extra={"error": repr(exc)})
        self.has_joined = False
        self.watchdog.since = None
        self.consumer = self._new_consumer(startup_timeout_s=60.0)

    def joined(self) -> bool:
        """True once the member has joined its group, with or without partitions (librdkafka
        calls the assignment callback with an empty list for a member given none)."""
        return self.has_joined

    def settle(self, timeout_ms: int) -> None:
        """Let a rebalance under way complete (it only does inside ``consume``) without taking
        records: every partition is paused first, so the poll returns none."""
        owned = self.consumer.assignment()
        if owned:
            self.consumer.pause(owned)
        self.consumer.consume(1, timeout_ms / 1000)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """True for readings re-read only to rebuild buffers (they were scored before)."""
        mask = np.zeros(len(offsets), dtype=bool)
        for p, until in self.replay_until.items():
            mask |= (partitions == p) & (offsets < until)
        return mask

    def _commit_offsets(
        self, next_offsets: dict[int, int], rebuild_from: dict[int, int]
    ) -> list[TopicPartition]:
        return [
            TopicPartition(self.topic, p, off, metadata=encode_metadata(min(rebuild_from.get(p, off), off)))
            for p, off in next_offsets.items()
        ]

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        """Commit ``next_offsets`` (last processed + 1) with the rebuild point as metadata.

        Retries retriable errors (coordinator moving, broker restarting) for up to
        ``commit_timeout_s``; a rebalance under way (it only completes in ``poll``) or a
        timeout returns False at once. Offsets not committed are re-read later: duplicates,
        never gaps.
        """
        offsets = self._commit_offsets(next_offsets, rebuild_from)
        deadline = time.monotonic() + self.commit_timeout_s
        attempt = 0
        while True:
            try:
                result = self.consumer.commit(offsets=offsets, asynchronous=False)
                failed = [tp for tp in result or () if tp.error is not None]
                if not failed:
                    return True
                error = failed[0].error
            except KafkaException as exc:
                error = exc.args[0]
            if error.code() in _REBALANCING or not error.retriable() or time.monotonic() >= deadline:
                log.warning(
                    "offsets not committed; they will be read again",
                    extra={"error": error.str(), "offsets": next_offsets},
                )
                return False
            attempt += 1
            time.sleep(min(1.0, 0.1 * attempt))

    def rewind(self, partitions: set[int]) -> None:
        """Seek ``partitions`` back to their committed rebuild point (see module docstring)."""
        for tp in self._start_offsets(self.consumer, partitions & self.assigned):
            if tp.offset == OFFSET_INVALID or tp.partition not in self.assigned:
                continue  # nothing committed, or lost meanwhile: nothing to rebuild here
            self.consumer.seek(tp)

    def lags(self, next_offsets: dict[int, int]) -> dict[int, int]:
        """Messages behind the partition end, from the last fetch's high watermark."""
        out: dict[int, int] = {}
        for p in self.assigned:
            tp = TopicPartition(self.topic, p)
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                position = next_offsets.get(p)
                if position is None:  # assigned, nothing processed yet: where the consumer stands
                    position = self.consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if high >= 0 and position is not None and position >= 0:
                out[p] = max(0, high - position)
        return out

    def close(self) -> None:
        """Leave the group. A consumer that is already unusable (fenced, fatal error) reports
        that again here; the reason was logged where it happened, so it only goes to the log."""
        try:
            self.consumer.close()
        except KafkaException as exc:
            log.warning("consumer did not leave the group cleanly", extra={"error": exc.args[0].str()})
