"""What the stream processor needs from a source, and the local base of the MQTT and OPC UA
sources.

The processor (``connectors/processor.py``) was written against Kafka: records carry a
partition and an offset, a checkpoint commits "offset + 1" with a *rebuild point* (the oldest
offset still needed to refill the window buffers), and a restart re-reads from the rebuild
point. MQTT and OPC UA have no offsets and nothing to re-read, so :class:`LocalSource` gives
every message a local sequence number on one pseudo-partition (0) and keeps a **journal**: the
messages from the rebuild point on. At each checkpoint the journal is written to
``state_dir`` (temporary file, fsync, rename) *before* the broker is told the messages are
done (MQTT PUBACK). A restarted daemon reads the journal back as *history* — it refills the
windows but is not scored again, exactly like the Kafka rewind — so a restart costs no
warm-up. Without ``state_dir`` the journal is kept in memory only (a model swap still rebuilds
from it) and a restart starts every asset's warm-up again: ``window - 1`` readings per asset
without a score, logged at start and visible as ``memae_ts_source_restored_readings_total``
staying at 0.

Why a journal of raw messages rather than a dump of the buffers: the processor already knows
how to rebuild buffers from messages (forward fills, gaps, resampling), and this keeps the
restart path identical to the Kafka one that the tests compare bitwise with offline scoring.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

PARTITION = 0  # the one pseudo-partition of a local source


class SourceConfigError(RuntimeError):
    """The broker or server refused our credentials or TLS/security setup (exit status 2)."""


class SourceUnavailable(RuntimeError):
    """No broker or server within the start deadline (exit status 1; systemd tries again)."""


class Source(Protocol):
    """The calls the processor and daemon make on a source (Kafka's, MQTT's or OPC UA's)."""

    assigned: set[int]

    def poll(self, timeout_ms: int) -> Sequence[Any]: ...
    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray: ...
    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool: ...
    def rewind(self, partitions: set[int]) -> None: ...
    def joined(self) -> bool: ...
    def settle(self, timeout_ms: int) -> None: ...
    def lags(self, next_offsets: dict[int, int]) -> dict[int, int]: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """The calls the processor makes on a sink (Kafka, MQTT, or both)."""

    def publish_many(self, keys: list[bytes], values: list[bytes]) -> None: ...
    def dead_letter(
        self, key: bytes | None, value: bytes | None, reason: str, detail: str, source: tuple[str, int, int]
    ) -> None: ...
    def flush(self, timeout_s: float = 60.0) -> int: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


@dataclass(slots=True)
class SourceRecord:
    """A message in the shape of a Kafka ``ConsumerRecord`` (what the processor reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # Unix milliseconds at which the daemon received it


class SourceMetrics:
    """Series of the MQTT/OPC UA sources, labelled by ``source`` (mqtt, opcua)."""

    def __init__(self, kind: str, registry: CollectorRegistry | None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.kind = kind
        self.messages = Counter(
            "memae_ts_source_messages",
            "Messages (MQTT publications, OPC UA data changes) received from the source.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.reconnects = Counter(
            "memae_ts_source_reconnects",
            "Connections to the broker or server made again after a loss.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.redeliveries = Counter(
            "memae_ts_source_redeliveries",
            "MQTT QoS 1 messages the broker delivered again (DUP flag): scored before a crash or "
            "outage, or not; a duplicate score is possible.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.sessions_lost = Counter(
            "memae_ts_source_sessions_lost",
            "Reconnects where the broker had not kept our session: messages published while we "
            "were away were not queued for us and are lost.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.connected = Gauge(
            "memae_ts_source_connected",
            "1 while connected to the broker or server.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.restored = Counter(
            "memae_ts_source_restored_readings",
            "Messages read back from the local journal at start to rebuild windows (not scored "
            "again); 0 after a restart means every asset warmed up again.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.tags_missing = Counter(
            "memae_ts_source_tags_missing",
            "Readings assembled without a value for a sensor (tag never arrived for the tick, or "
            "bad quality): the value is missing and filled as offline scoring fills it.",
            ["source", "sensor"],
            registry=r,
        )
        self.bad_quality = Counter(
            "memae_ts_source_bad_quality",
            "Values with a Bad OPC UA status code, used as missing values.",
            ["source", "sensor"],
            registry=r,
        )
        self.superseded = Counter(
            "memae_ts_source_values_superseded",
            "Values replaced by a later value of the same sensor within one tick (the last wins).",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.held = Counter(
            "memae_ts_source_values_held",
            "OPC UA values carried into a tick with no new notification (the server reports "
            "changes only, so an unchanged value is held).",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.duplicates = Counter(
            "memae_ts_source_duplicates_dropped",
            "Redelivered MQTT messages dropped because they had been scored (or dead-lettered) and "
            "acknowledged already, the acknowledgement lost in a crash or broker restart.",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self.late = Counter(
            "memae_ts_source_late_values",
            "Tag values that arrived after the reading of their tick was already assembled "
            "(dead letters, reason time_backwards).",
            ["source"],
            registry=r,
        ).labels(source=kind)
        self._r = r

    def pre_create(self, sensors: list[str]) -> None:
        for s in sensors:
            self.tags_missing.labels(source=self.kind, sensor=s)
            if self.kind == "opcua":
                self.bad_quality.labels(source=self.kind, sensor=s)


@dataclass(slots=True)
class _Queued:
    topic: str
    key: bytes | None
    value: bytes | None
    token: Any  # what acknowledges the message (an MQTT message id), or None
    received: float
    rejection: tuple[str, str] | None = None  # (reason, detail): a dead letter, not a reading


DeadLetterFn = Callable[[bytes | None, bytes | None, str, str, tuple[str, int, int]], None]


class LocalSource:
    """A queue filled by a client thread, drained by :meth:`poll`; see the module docstring.

    Subclasses call :meth:`offer` (a message to score, with its acknowledgement token) and
    :meth:`reject` (a message that is a dead letter before it is a reading), and implement
    :meth:`_acknowledge` and :meth:`_disconnect`.
    """

    kind = "local"
    _SEEN_MAX = 50_000  # digests of recently acknowledged messages kept to drop redelivered copies

    def __init__(
        self,
        metrics: SourceMetrics,
        *,
        batch_size: int = 5000,
        state_dir: str = "",
        max_journal: int = 100_000,
    ) -> None:
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_journal = max_journal
        self.assigned: set[int] = {PARTITION}
        self.replay_until: dict[int, int] = {}
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._next = 0
        self._tokens: deque[tuple[int, Any]] = deque()  # (offset, token), offsets ascending
        self._rejected_tokens: list[Any] = []
        self._journal: deque[tuple[int, str, bytes | None, bytes | None]] = deque()
        self._history: list[SourceRecord] = []
        self._journal_dirty = False
        self._connected_once = threading.Event()
        self._up = False
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._seen_lock = threading.Lock()
        self._in_flight: set[str] = set()
        self.dead_letter: DeadLetterFn | None = None  # set by the daemon once the sink exists
        self.flush_sink: Callable[[], object] | None = None
        self._on_rewound: Callable[[int, int, int, int], None] | None = None
        self.state_file = Path(state_dir) / f"{self.kind}-journal.json" if state_dir else None
        # The alarm rule's state per asset (connectors/alarm_state.py), saved with the journal
        # in the same file so it always matches the messages restored; read back once at start.
        self.alarm_state: dict[str, Any] = {}
        self.restored_alarm_state: dict[str, Any] | None = None
        self._restore()

    def bind(self, on_rewound: Callable[[int, int, int, int], None] | None) -> None:
        """The processor's rewind callback; a journal restored at start is reported to it as the
        rewind of a Kafka partition would be."""
        self._on_rewound = on_rewound
        if self._history and on_rewound is not None:
            on_rewound(PARTITION, self._next, self._history[0].offset, self._history[0].offset)

    # -- client thread side --------------------------------------------------------------

    def offer(self, topic: str, key: bytes | None, value: bytes | None, token: Any) -> None:
        self._queue.put(_Queued(topic, key, value, token, time.time()))

    def reject(
        self, topic: str, key: bytes | None, value: bytes | None, token: Any, reason: str, detail: str
    ) -> None:
        """A message that cannot become a reading (a malformed tag, a topic with no asset)."""
        self._queue.put(_Queued(topic, key, value, token, time.time(), (reason, detail)))

    # -- processor side ------------------------------------------------------------------

    def poll(self, timeout_ms: int) -> list[SourceRecord]:
        """History first (once, after a start or rewind), then what arrived: waits up to
        ``timeout_ms`` for the first message, then takes what is queued up to ``batch_size``."""
        if self._history:
            out, self._history = self._history, []
            return out
        items: list[_Queued] = []
        try:
            items.append(self._queue.get(timeout=max(0.0, timeout_ms / 1000)))
            while len(items) < self.batch_size:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        out = []
        for item in items:
            if item.rejection is not None:
                self._reject_now(item, *item.rejection)
                continue
            offset = self._next
            self._next += 1
            if item.token is not None:
                self._tokens.append((offset, item.token))
            self._journal.append((offset, item.topic, item.key, item.value))
            out.append(
                SourceRecord(item.topic, PARTITION, offset, item.key, item.value, int(item.received * 1000))
            )
        if len(self._journal) > self.max_journal:
            for _ in range(len(self._journal) - self.max_journal):
                self._journal.popleft()
        if out:
            self._journal_dirty = True
        elif self._rejected_tokens and self.flush_sink is not None:
            # Only dead letters this time: the processor will not checkpoint, so acknowledge
            # them here once the dead-letter sink has them.
            self.flush_sink()
            self._ack_rejected()
        return out

    def _reject_now(self, item: _Queued, reason: str, detail: str) -> None:
        if self.dead_letter is not None:
            self.dead_letter(item.key, item.value, reason, detail, (item.topic, PARTITION, -1))
        if item.token is not None:
            self._rejected_tokens.append(item.token)

    def _ack_rejected(self) -> None:
        tokens, self._rejected_tokens = self._rejected_tokens, []
        self._remember([d for t in tokens for d in self._digests(t)])
        for token in tokens:
            self._acknowledge(token)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        until = self.replay_until.get(PARTITION)
        if until is None:
            return np.zeros(len(offsets), dtype=bool)
        return offsets < until

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        """Write the journal from the rebuild point on, then acknowledge the messages before
        ``next_offsets`` (their scores are out: the processor flushed the sink first).

        The journal also names (by digest) the messages about to be acknowledged: a crash
        between writing it and the broker receiving the acknowledgements makes the broker
        deliver them again, and the next daemon drops those copies (counted) instead of
        scoring them twice or dead-lettering them as ``time_backwards``."""
        done = next_offsets.get(PARTITION)
        if done is None:
            return True
        keep_from = min(rebuild_from.get(PARTITION, done), done)
        while self._journal and self._journal[0][0] < keep_from:
            self._journal.popleft()
        tokens: list[Any] = []
        while self._tokens and self._tokens[0][0] < done:
            tokens.append(self._tokens.popleft()[1])
        tokens.extend(self._rejected_tokens)
        self._rejected_tokens = []
        digests = [d for t in tokens for d in self._digests(t)]
        self._remember(digests)
        if self.state_file is not None and (self._journal_dirty or digests):
            self._save(digests)
        self._journal_dirty = False
        for token in tokens:
            self._acknowledge(token)
        return True

    def _remember(self, digests: list[str]) -> None:
        with self._seen_lock:
            self._in_flight.difference_update(digests)
            for d in digests:
                if d not in self._seen:
                    self._seen.add(d)
                    self._seen_order.append(d)
            while len(self._seen_order) > self._SEEN_MAX:
                self._seen.discard(self._seen_order.popleft())

    def seen_before(self, digest: str) -> bool:
        """True for a message already scored (or dead-lettered) and acknowledged recently, or
        received by this process and not yet acknowledged (a copy sent again after a reconnect
        while the original is being scored)."""
        with self._seen_lock:
            return digest in self._seen or digest in self._in_flight

    def receiving(self, digest: str) -> None:
        """A message that will be acknowledged at a checkpoint (see :meth:`seen_before`)."""
        with self._seen_lock:
            self._in_flight.add(digest)

    def rewind(self, partitions: set[int]) -> None:
        """Feed the journal again as history (a model with other windows was loaded)."""
        if PARTITION not in partitions or not self._journal:
            return
        self.replay_until[PARTITION] = self._next
        self._history = [
            SourceRecord(topic, PARTITION, off, key, value, 0) for off, topic, key, value in self._journal
        ]
        if self._on_rewound is not None:
            self._on_rewound(PARTITION, self._next, self._history[0].offset, self._history[0].offset)

    def _set_connected(self, up: bool) -> None:
        self._up = up
        self.metrics.connected.set(1 if up else 0)

    def connected(self) -> bool:
        """Connected to the broker or server now (readiness: /readyz)."""
        return self._up

    def joined(self) -> bool:
        return self._connected_once.is_set()

    def settle(self, timeout_ms: int) -> None:
        time.sleep(timeout_ms / 1000)

    def lags(self, next_offsets: dict[int, int]) -> dict[int, int]:
        """Messages received and not yet processed (the local queue)."""
        return {PARTITION: self._queue.qsize()}

    def close(self) -> None:
        self._disconnect()

    # -- subclasses ----------------------------------------------------------------------

    def _acknowledge(self, token: Any) -> None:
        raise NotImplementedError

    def _digests(self, token: Any) -> list[str]:
        """Digests of the broker messages a token acknowledges (none for OPC UA)."""
        return []

    def _disconnect(self) -> None:
        raise NotImplementedError

    # -- journal -------------------------------------------------------------------------

    def _save(self, acking: list[str]) -> None:
        assert self.state_file is not None
        rows = [[off, topic, _b64(key), _b64(value)] for off, topic, key, value in self._journal]
        state = {"version": 1, "kind": self.kind, "next": self._next, "journal": rows, "acking": acking}
        data = orjson.dumps({**state, "alarm_state": self.alarm_state})
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)

    def _restore(self) -> None:
        if self.state_file is None:
            log.warning(
                "no source.state_dir: windows are not kept across a restart; every asset warms up again",
                extra={"source": self.kind},
            )
            return
        try:
            data = orjson.loads(self.state_file.read_bytes())
            rows = data["journal"]
            if data.get("kind") != self.kind:
                raise ValueError(f"journal of a {data.get('kind')!r} source")
        except FileNotFoundError:
            log.info("no source journal yet; every asset warms up", extra={"file": str(self.state_file)})
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "source journal unreadable; every asset warms up again",
                extra={"file": str(self.state_file), "error": repr(exc)},
            )
            return
        self._remember([str(d) for d in data.get("acking", [])])
        alarm_state = data.get("alarm_state")
        self.restored_alarm_state = alarm_state if isinstance(alarm_state, dict) else None
        for off, (_, topic, key, value) in enumerate(rows):
            self._journal.append((off, topic, _unb64(key), _unb64(value)))
        self._next = len(self._journal)
        self.replay_until[PARTITION] = self._next
        self._history = [
            SourceRecord(topic, PARTITION, off, key, value, 0) for off, topic, key, value in self._journal
        ]
        self.metrics.restored.inc(len(self._history))
        log.info("source journal restored", extra={"file": str(self.state_file), "messages": self._next})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class TeeSink:
    """Scores and dead letters to several sinks (e.g. MQTT for the plant, Kafka for the data
    center); ``flush`` returns when every one has them acknowledged."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def publish_many(self, keys: Any, values: Any) -> None:
        for s in self.sinks:
            s.publish_many(keys, values)

    def publish_episodes(self, keys: Any, values: Any) -> None:
        """Episode records to every sink that sends them (Kafka's episodes topic, MQTT's)."""
        for s in self.sinks:
            publish = getattr(s, "publish_episodes", None)
            if publish is not None:
                publish(keys, values)

    def dead_letter(self, *args: Any) -> None:
        for s in self.sinks:
            s.dead_letter(*args)

    def flush(self, timeout_s: float = 60.0) -> int:
        return min(s.flush(timeout_s) for s in self.sinks)

    def close(self, timeout_s: float = 10.0) -> None:
        for s in self.sinks:
            s.close(timeout_s)
