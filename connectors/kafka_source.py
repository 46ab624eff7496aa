"""Kafka source: a consumer-group member with manual commits and buffer rebuild on assignment.

Why commit metadata: a window needs the previous ``window - 1`` readings of its asset, which
sit before the committed offset. With every commit we store, per partition, the oldest offset
still needed to rebuild the window buffers (``rebuild_from``). When a partition is assigned
(start, restart after SIGKILL, rebalance), the consumer seeks back to that offset; readings
between it and the committed offset are *history*: they refill buffers but are not scored
again. So no score is missing after a restart and none is duplicated unless the process died
between acknowledging scores and committing (at-least-once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

_META_PREFIX = "memae-ts:rebuild_from="


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
        on_revoked: Callable[[set[int]], None] | None = None,
        on_assigned: Callable[[set[int]], None] | None = None,
    ) -> None:
        self.topic = topic
        self.max_rewind_messages = max_rewind_messages
        self.commit_timeout_s = commit_timeout_s
        self.replay_until: dict[int, int] = {}
        self.assigned: set[int] = set()
        self._to_rewind: set[int] = set()
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self.consumer = KafkaConsumer(
            **client_config,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=batch_size,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            # Notice a topic created (or partitions added) after we joined within 30 s, not 5 min.
            metadata_max_age_ms=30_000,
        )
        # Metadata first: a member that joins before its metadata names the topic's partitions
        # is assigned none until the next refresh (up to metadata_max_age_ms later).
        self.consumer.partitions_for_topic(topic)
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
            start = decode_metadata(committed.metadata)
            if start is None:
                start = committed.offset
            start = max(start, committed.offset - self.max_rewind_messages, beginning[tp])
            start = min(start, committed.offset)
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
        self.source.assigned |= parts
        if assigned:
            self.source.consumer.pause(*assigned)
            self.source._to_rewind |= parts
        if self.source._on_assigned is not None:
            self.source._on_assigned(parts)
