"""Exactly-once mode (``[processing] delivery = "exactly-once"``): the score records, dead letters
and episode records of a checkpoint, the input offsets and the rebuild point are committed in
one Kafka transaction, read back by ``read_committed`` consumers.

The consumer is the at-least-once path's (:class:`~connectors.kafka_source.KafkaSource`, a
librdkafka consumer), reading ``read_committed``: a transaction commits its offsets with
``send_offsets_to_transaction(offsets, group_metadata)``, where the group metadata (group id,
generation, member id; KIP-447) is what fences a member that lost its partitions in a
rebalance, and librdkafka's producer only takes that metadata from a librdkafka consumer.

Checkpoint (the processor's order is unchanged; only what "commit" means differs):

1. every record of the processed readings is produced inside the open transaction;
2. the producer is flushed (all acknowledged: the daemon's usual check);
3. the offsets, each with its rebuild point as commit metadata, are sent to the transaction
   with the consumer's group metadata, and the transaction is committed; the next one begins.

A crash anywhere before 3 leaves the transaction open: the broker aborts it (the restarted
daemon's ``init_transactions`` with the same ``transactional.id`` fences and aborts it at once;
otherwise after ``transaction_timeout_ms``), a ``read_committed`` reader never sees its
records, and the readings are scored again from the committed offsets: no duplicates, no gaps.
A transaction the broker refuses to commit (a rebalance moved a partition), or whose records
were not acknowledged in time, is aborted, every assigned partition's buffers are dropped and
rebuilt from the committed rebuild points, and the readings since are scored again in a new
transaction. Each abort is logged and counted (``memae_ts_transactions_aborted_total``).

A broker outage is waited out, as in at-least-once mode, for ``flush_timeout_seconds``: why
that needs more than a retry here. librdkafka caps a record's delivery timeout at the
transaction timeout (10 s by default), so a longer outage fails the open transaction's records;
and the broker, once back, aborts every transaction older than its timeout and bumps the
producer's epoch, so this producer is fenced, or its abort finds the transaction already ended
(fatal errors both) although no other instance exists. Such an error that a timed-out
transaction explains (records of it were sent longer than ``transaction_timeout_ms`` ago) is
therefore survived: a new producer with the same ``transactional.id`` takes over and the
readings are scored again. Any other fatal error (fenced by a newer instance with the same id,
a transaction with nothing sent) exits the daemon (1), as does an outage longer than
``flush_timeout_seconds``. Before this, the daemon exited 1 on any outage past the transaction
timeout. ``send_offsets_to_transaction`` can also block past its timeout after an outage
(librdkafka issues #5456, #5511): it runs with a deadline of its own, and a new producer takes
over when that passes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from memae_ts.connectors.kafka_sink import DeliveryFailed, KafkaSink
from memae_ts.connectors.kafka_source import KafkaSource

log = logging.getLogger(__name__)

# How librdkafka reports (as fatal errors) a transaction the broker aborted for its timeout: the
# producer's epoch was bumped (fenced), or the abort finds it already ended (INVALID_TXN_STATE).
_ENDED_BY_BROKER = frozenset({
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_TXN_STATE,
})  # fmt: skip


class _Caller:
    """Runs calls on a daemon thread of its own and waits for each up to a deadline: for
    librdkafka calls whose own timeout is not kept (librdkafka issues #5456 and #5511). A call
    still running at its deadline is left to that thread, which ends once it returns; the next
    call gets a new thread. One thread for all calls: a call costs about 6 µs through it, and
    starting a thread per call cost 130 µs (a commit every poll in exactly-once mode)."""

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[Callable[[], object] | None] | None = None  # None: no thread
        self._outbox: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def returned_within(self, call: Callable[[], object], seconds: float) -> bool:
        """True when ``call`` returned within ``seconds`` (its exception is raised here), False
        when it is still running."""
        if self._inbox is None:
            self._inbox, self._outbox = queue.SimpleQueue(), queue.SimpleQueue()
            args = (self._inbox, self._outbox)
            threading.Thread(target=self._serve, args=args, name="librdkafka-call", daemon=True).start()
        self._inbox.put(call)
        try:
            failure = self._outbox.get(timeout=seconds)
        except queue.Empty:
            self._inbox.put(None)  # the stuck thread ends when (if) its call returns
            self._inbox = None
            return False
        if failure is not None:
            raise failure
        return True

    @staticmethod
    def _serve(
        inbox: queue.SimpleQueue[Callable[[], object] | None], outbox: queue.SimpleQueue[BaseException | None]
    ) -> None:
        while (call := inbox.get()) is not None:
            try:
                call()
                outbox.put(None)
            except BaseException as exc:  # handed to the caller
                outbox.put(exc)


class TransactionalSink(KafkaSink):
    """A :class:`KafkaSink` whose records go out in transactions (``transactional.id``): one is
    always open; :meth:`commit_offsets` commits it with the input offsets and begins the next."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        dead_letter_topic: str,
        *,
        transactional_id: str,
        transaction_timeout_ms: int = 60_000,
        on_abort: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._transactional = {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": transaction_timeout_ms,
        }
        self._timeout_s = transaction_timeout_ms / 1000
        self._on_abort = on_abort or (lambda reason: None)
        # When this transaction's first records were flushed (None: nothing sent yet): the
        # broker's transaction timer runs from about then (see the module docstring).
        self._sent_at: float | None = None
        # Records of the open transaction that failed (not acknowledged in time): the commit
        # that follows aborts it instead, waiting for the broker until this deadline.
        self._doomed: tuple[DeliveryFailed, float] | None = None
        self._caller = _Caller()
        super().__init__(client_config, topic, dead_letter_topic, **kwargs)
        # Fences an earlier instance with this id and aborts what it left open.
        self.producer.init_transactions(30)
        self.producer.begin_transaction()

    def _producer_settings(self) -> dict[str, Any]:
        settings = {**super()._producer_settings(), **self._transactional}
        # librdkafka: a record must fail within the transaction's lifetime.
        limit = settings["transaction.timeout.ms"]
        settings["delivery.timeout.ms"] = min(settings["delivery.timeout.ms"], limit)
        return settings

    def flush(self, timeout_s: float = 60.0) -> int:
        """:meth:`KafkaSink.flush`, except that records not acknowledged in time (the broker
        away past the transaction timeout) fail the transaction, not the daemon: the commit that
        follows aborts it and the readings are scored again, the broker waited for until
        ``timeout_s`` after this flush began (the daemon's ``flush_timeout_seconds``)."""
        started = time.monotonic()
        if self._sent_at is None and self._sent:
            self._sent_at = started
        try:
            return super().flush(timeout_s)
        except DeliveryFailed as failure:
            error = failure.error
            if not isinstance(error, KafkaError) or (error.fatal() and not self._timed_out(error)):
                raise
            log.warning(
                "scores of the open transaction not acknowledged; it is aborted and its readings "
                "scored again once the broker is back",
                extra={"error": error.str()},
            )
            self._doomed = (failure, started + timeout_s)
            return 0

    def commit_offsets(self, offsets: list[TopicPartition], group_metadata: Any, timeout_s: float) -> bool:
        """Send ``offsets`` into the open transaction and commit it; begin the next. False: the
        transaction was aborted (its records are discarded; the caller re-reads). Raises
        :class:`DeliveryFailed` on a fatal error (fenced by another instance, or the broker
        away past the deadline)."""
        if self._doomed is not None:
            deadline = self._doomed[1]
            self._recover("records_unacknowledged", deadline)
            return False
        if self._sent_at is None:
            self._sent_at = time.monotonic()  # the offsets alone open it on the broker
        deadline = time.monotonic() + timeout_s
        step = "send_offsets"
        while True:
            try:
                remaining = max(1.0, deadline - time.monotonic())
                if step == "send_offsets":
                    producer = self.producer
                    call = partial(producer.send_offsets_to_transaction, offsets, group_metadata, remaining)
                    if not self._caller.returned_within(call, remaining + 10):
                        log.warning(
                            "the producer did not return from send_offsets_to_transaction (librdkafka "
                            "#5456, #5511: it can wait for a group coordinator forever); a new producer "
                            "takes over and the readings are scored again",
                            extra={"waited_seconds": round(remaining + 10, 1)},
                        )
                        self._recover("commit_unanswered", deadline + timeout_s, hung=True)
                        return False
                    step = "commit"
                self.producer.commit_transaction(remaining)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() and not self._timed_out(error):
                    raise DeliveryFailed(self.topic, error) from None
                gone = error.fatal() or error.txn_requires_abort() or not error.retriable()
                if gone or time.monotonic() >= deadline:
                    log.warning(
                        "transaction aborted; its readings are read and scored again",
                        extra={"error": error.str(), "step": step},
                    )
                    self._recover("commit_refused", deadline + timeout_s)
                    return False
                time.sleep(0.1)
        self._sent_at = None
        self.producer.begin_transaction()
        return True

    def _timed_out(self, error: KafkaError) -> bool:
        """A fatal error that this transaction outliving ``transaction.timeout.ms`` explains: the
        broker aborted it and bumped the epoch (a broker outage), not another instance."""
        ended = error.code() in _ENDED_BY_BROKER
        return ended and self._sent_at is not None and time.monotonic() - self._sent_at > self._timeout_s

    def _recover(self, reason: str, deadline: float, *, hung: bool = False) -> None:
        """Abort the open transaction (the broker discards its records) and begin the next,
        waiting for the broker until ``deadline``. A producer fenced because this transaction
        timed out on the broker, or stuck in a call (``hung``), is replaced by a new one with the
        same ``transactional.id``, whose ``init_transactions`` aborts the transaction instead."""
        self._on_abort(reason)
        waited = False
        while not hung:
            try:
                self.producer.abort_transaction(max(1.0, min(5.0, deadline - time.monotonic())))
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() and self._timed_out(error):
                    log.warning(
                        "producer fenced after its transaction timed out on the broker (an outage "
                        "longer than transaction_timeout_ms); a new one takes over",
                        extra={"transaction_timeout_ms": int(self._timeout_s * 1000)},
                    )
                    self.producer.purge()  # records of the aborted transaction
                    hung = True
                    break
                if error.fatal() or not error.retriable() or time.monotonic() >= deadline:
                    raise DeliveryFailed(self.topic, error) from None
                if not waited:
                    waited = True
                    why = {"error": error.str()}
                    log.warning("waiting for the broker to abort the transaction", extra=why)
        if hung:
            self._replace_producer(deadline)
        self.producer.poll(0)  # delivery reports of the purged records: failures of the aborted one
        self._failures.clear()
        self._refused.clear()
        self._sent = 0
        self._sent_at = None
        self._doomed = None
        self.producer.begin_transaction()

    def _replace_producer(self, deadline: float) -> None:
        """A new producer with the same ``transactional.id``; its ``init_transactions`` bumps
        the epoch (fencing the old one) and aborts what the old one left open, waiting for the
        broker until ``deadline``. The old one is left to the garbage collector: a thread may
        still be inside one of its calls, which holds it."""
        self.producer = Producer(self._producer_settings())
        while True:
            try:
                self.producer.init_transactions(max(1.0, min(5.0, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or not error.retriable() or time.monotonic() >= deadline:
                    raise DeliveryFailed(self.topic, error) from None

    def close(self, timeout_s: float = 10.0) -> None:
        """An open transaction with records is aborted (they were never committed with their
        offsets: they will be scored again)."""
        try:
            self.producer.abort_transaction(max(1.0, timeout_s))
        except KafkaException:
            pass  # nothing open, or the producer is already fenced: nothing to undo
        super().close(timeout_s)


class TransactionalSource(KafkaSource):
    """The input topic read ``read_committed``; offsets are committed by the sink's
    transaction, never by the consumer. Everything else (settings, rebuild on assignment,
    rewind, lags, the rebalance watchdog) is :class:`KafkaSource`'s."""

    transactional = True  # a refused commit rewinds (StreamProcessor.checkpoint keeps nothing)
    read_committed = True

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        group_id: str,
        sink: TransactionalSink,
        *,
        commit_timeout_s: float = 30.0,
        **options: Any,
    ) -> None:
        self.sink = sink
        super().__init__(client_config, topic, group_id, commit_timeout_s=commit_timeout_s, **options)

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        """Commit the open transaction with these offsets (and rebuild points). When the
        broker refuses it, everything since the last commit is rebuilt and scored again."""
        offsets = self._commit_offsets(next_offsets, rebuild_from)
        if self.sink.commit_offsets(offsets, self.consumer.consumer_group_metadata(), self.commit_timeout_s):
            return True
        parts = set(self.assigned)
        if self._on_revoked is not None and parts:
            self._on_revoked(parts)  # buffers hold readings whose scores were discarded
        self.rewind(parts)
        return False
