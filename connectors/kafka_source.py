"""Kafka source: a consumer-group member with manual commits and buffer rebuild on assignment.

Why commit metadata: a window needs the previous ``window - 1`` readings of its asset, which
sit before the committed offset. With every commit we store, per partition, the oldest offset
still needed to rebuild the window buffers (``rebuild_from``). When a partition is assigned
(start, restart after SIGKILL, rebalance), the consumer seeks back to that offset; readings
between it and the committed offset are *history*: they refill buffers but are not scored
again. So no score is missing after a restart and none is duplicated unless the process died
between acknowledging scores and committing (at-least-once).

The rewind is bounded by ``max_rewind_messages`` (and by what log retention kept): that bounds
the time a restart spends re-reading. An asset whose window reaches further back (a slow asset
sharing a partition with busy ones) then starts a new warm-up and loses up to window - 1
scores; every such rewind is logged with how far it fell short and reported to
``on_truncated`` (a metric), and the processor exports each partition's rebuild span so an
operator sees it coming and can raise the bound.

Why cooperative-sticky assignment and static membership: with the eager protocol every member
gives up every partition at every rebalance and rebuilds all its windows; cooperative-sticky
moves only the partitions that change owner, and a static member (``group_instance_id``) that
restarts within the session timeout gets its partitions back with no rebalance at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

_META_PREFIX = "memae-ts:rebuild_from="

ASSIGNORS: dict[str, Any] = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}


def encode_metadata(rebuild_from: int) -> str:
    return f"{_META_PREFIX}{rebuild_from}"


def decode_metadata(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(_META_PREFIX):
        try:
            return int(metadata[len(_META_PREFIX) :])
        except ValueError:
            return None
    return None


class KafkaSource:
    """Consumes one input topic as a member of ``group_id``; nothing is auto-committed."""

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
        partition_assignment: str = "cooperative-sticky",
        group_instance_id: str = "",
        on_revoked: Callable[[set[int]], None] | None = None,
        on_assigned: Callable[[set[int]], None] | None = None,
        on_rewound: Callable[[int, int, int, int], None] | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.topic = topic
        self.max_rewind_messages = max_rewind_messages
        self.commit_timeout_s = commit_timeout_s
        self.replay_until: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.has_joined = False
        self._to_rewind: set[int] = set()
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._on_rewound = on_rewound
        self.consumer = KafkaConsumer(
            **client_config,
            group_id=group_id,
            group_instance_id=group_instance_id or None,
            partition_assignment_strategy=[ASSIGNORS[partition_assignment]],
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=batch_size,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            # Notice a topic created (or partitions added) after we joined within 30 s, not 5 min.
            metadata_max_age_ms=30_000,
        )
        # Metadata first: a member that joins before its metadata names the topic's partitions
        # is assigned none until the next refresh (up to metadata_max_age_ms later). A broker
        # that is restarting is waited for up to `startup_timeout_s`; only then is it a reason
        # to exit (status 1, and the supervisor tries again).
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                self.consumer.partitions_for_topic(topic)
                break
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    self.consumer.close(autocommit=False)
                    raise
                log.warning("broker not reachable yet; retrying", extra={"error": repr(exc)})
                time.sleep(1.0)
        self.consumer.subscribe([topic], listener=_Listener(self))

    def poll(self, timeout_ms: int) -> list[ConsumerRecord]:
        """Records of one poll. Newly assigned partitions are rewound here, outside the
        rebalance callback: kafka-python runs callbacks on its IO thread, where blocking calls
        (committed offsets) are not allowed, so the callback only pauses them."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        if self._to_rewind:
            parts, self._to_rewind = self._to_rewind & self.assigned, set()
            self.rewind(parts)
            self.consumer.resume(*[TopicPartition(self.topic, p) for p in parts])
        records: list[ConsumerRecord] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            records.extend(batches[tp])
        return records

    def joined(self) -> bool:
        """True once the member has joined its group, with or without partitions (under the
        cooperative protocol a member given none hears no assignment callback at all)."""
        return self.has_joined or self.consumer.group_metadata().generation_id > 0

    def settle(self, timeout_ms: int) -> None:
        """Let a rebalance under way complete (it only does inside ``poll``) without taking
        records: every partition is paused first, so the poll returns none."""
        owned = self.consumer.assignment()
        if owned:
            self.consumer.pause(*owned)
        self.consumer.poll(timeout_ms=timeout_ms)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """True for readings re-read only to rebuild buffers (they were scored before)."""
        mask = np.zeros(len(offsets), dtype=bool)
        for p, until in self.replay_until.items():
            mask |= (partitions == p) & (offsets < until)
        return mask

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        """Commit ``next_offsets`` (last processed + 1) with the rebuild point as metadata.

        Retries retriable errors (coordinator moving, broker restarting) for up to
        ``commit_timeout_s``, then gives up and returns False: the loop must get back to
        ``poll`` because a rebalance (RebalanceInProgress, IllegalGeneration, ...) only
        completes there. Offsets not committed are re-read later: duplicates, never gaps.
        """
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(
                off, encode_metadata(min(rebuild_from.get(p, off), off)), -1
            )
            for p, off in next_offsets.items()
        }
        deadline = time.monotonic() + self.commit_timeout_s
        attempt = 0
        while True:
            try:
                self.consumer.commit(offsets, timeout_ms=5_000)
                return True
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() >= deadline:
                    log.warning(
                        "offsets not committed; they will be read again",
                        extra={"error": repr(exc), "offsets": next_offsets},
                    )
                    return False
                attempt += 1
                time.sleep(min(1.0, 0.1 * attempt))

    def rewind(self, partitions: set[int]) -> None:
        """Seek ``partitions`` back to their committed rebuild point (see module docstring)."""
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            return
        beginning = self.consumer.beginning_offsets(tps)
        for tp in tps:
            committed = self.consumer.committed(tp, metadata=True)
            if committed is None or committed.offset is None or committed.offset < 0:
                self.replay_until.pop(tp.partition, None)
                continue
            wanted = decode_metadata(committed.metadata)
            if wanted is None:
                wanted = committed.offset
            wanted = min(wanted, committed.offset)
            floor = max(committed.offset - self.max_rewind_messages, beginning[tp])
            start = min(max(wanted, floor), committed.offset)
            self.consumer.seek(tp, start)
            self.replay_until[tp.partition] = committed.offset
            log.info(
                "partition assigned",
                extra={
                    "partition": tp.partition,
                    "committed": committed.offset,
                    "rebuild_from": start,
                },
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
                        "cause": "log retention" if start == beginning[tp] else "max_rewind_messages",
                    },
                )
            if self._on_rewound is not None:
                self._on_rewound(tp.partition, committed.offset, start, wanted)

    def lags(self, next_offsets: dict[int, int]) -> dict[int, int]:
        """Messages behind the partition end, from the last fetch's high watermark."""
        out: dict[int, int] = {}
        for p in self.assigned:
            tp = TopicPartition(self.topic, p)
            high = self.consumer.highwater(tp)
            position = next_offsets.get(p)
            if position is None:  # assigned, nothing processed yet: where the consumer stands
                try:
                    position = self.consumer.position(tp, timeout_ms=50)
                except (KafkaError, ValueError):
                    position = None
            if high is not None and position is not None:
                out[p] = max(0, high - position)
        return out

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    """Runs on kafka-python's IO thread: no blocking consumer calls here.

    Nothing needs committing on revocation because the processor checkpoints after every poll
    and callbacks only run inside ``poll``; assigned partitions are paused until ``poll`` has
    rewound them.
    """

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        # Evicted from the group (session expired): the same as a revocation for us; the
        # commit of their offsets would fail anyway, and the new owner re-reads them.
        self.on_partitions_revoked(lost)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in revoked}
        if self.source._on_revoked is not None and parts:
            self.source._on_revoked(parts)
        self.source.assigned -= parts
        self.source._to_rewind -= parts
        for p in parts:
            self.source.replay_until.pop(p, None)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned}
        self.source.has_joined = True
        self.source.assigned |= parts
        if assigned:
            self.source.consumer.pause(*assigned)
            self.source._to_rewind |= parts
        if self.source._on_assigned is not None:
            self.source._on_assigned(parts)
