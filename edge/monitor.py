"""The lag monitor: end offsets from the broker on a thread of its own, beside the loop.

Why a separate thread and client: the consumer lag used to be computed after each commit from
the consumer's last fetch, so when the processing loop stalled (a hung engine, a long broker
outage during a flush) the gauge froze at its last value and the lag alert could never fire.
Here a librdkafka admin client asks the broker for the partitions' end offsets every
``interval_s`` and subtracts the loop's position (the next offset it would process): a stalled
loop shows as a growing lag. The same answers tell ``/readyz`` whether the broker is reachable
(``memae_ts_broker_up``). The kafka-python consumer is not thread-safe, so it is not used here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from memae_ts.connectors.kafka_sink import producer_config
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.edge.http import HealthState

log = logging.getLogger(__name__)


class LagMonitor:
    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        assigned: Callable[[], set[int]],
        positions: Callable[[], dict[int, int]],
        metrics: EdgeMetrics,
        health: HealthState,
        *,
        interval_s: float = 5.0,
    ) -> None:
        self.topic = topic
        self.assigned = assigned
        self.positions = positions
        self.metrics = metrics
        self.health = health
        self.interval_s = interval_s
        # Connection failures are the producer's to report; this client logs only the critical.
        self._admin = AdminClient(
            {**producer_config(client_config), "error_cb": self._on_error, "logger": log, "log_level": 2}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        # The producer already logs broker trouble; one line per outage is enough.
        log.debug("lag monitor: kafka error", extra={"error": str(error)})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.measure()
            except Exception as exc:  # the monitor must never take the daemon down
                log.warning("lag monitor failed", extra={"error": repr(exc)})
            self._stop.wait(self.interval_s)

    def measure(self) -> dict[int, int] | None:
        """One round: end offsets of the assigned partitions (or, with none assigned, the
        topic's metadata, to know the broker answers); returns the lags set."""
        timeout = max(1.0, min(10.0, self.interval_s))
        parts = sorted(self.assigned())
        try:
            if not parts:
                self._admin.list_topics(self.topic, timeout=timeout)
                ends: dict[int, int] = {}
            else:
                request = {TopicPartition(self.topic, p): OffsetSpec.latest() for p in parts}
                futures = self._admin.list_offsets(request, request_timeout=timeout)
                ends = {tp.partition: f.result(timeout=timeout + 1).offset for tp, f in futures.items()}
        except Exception as exc:
            self.metrics.broker_up.set(0)
            log.debug("lag monitor: broker did not answer", extra={"error": repr(exc)})
            return None
        self.health.broker_answered()
        self.metrics.broker_up.set(1)
        positions = self.positions()
        owned = self.assigned()
        lags = {p: max(0, end - positions[p]) for p, end in ends.items() if p in positions and p in owned}
        self.metrics.set_lag(lags)
        self.metrics.lag_updated.set(time.time())
        return lags
