"""The edge daemon: model + Kafka source/sink + HTTP endpoints, driven by signals.

* SIGTERM / SIGINT: finish the current batch, flush, commit, leave the group, exit 0.
* SIGHUP: load the bundle at ``model.path`` again (e.g. after ``rsync`` of a new model) and
  serve it from the next batch; readings are not lost because the swap happens between
  batches in the processing thread. A bundle that fails to load keeps the old model.
* A record the broker never acknowledged: exit 1 without committing (systemd restarts us and
  we resume from the last commit).
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from connectors.kafka_sink import DeliveryFailed, KafkaSink
from connectors.kafka_source import KafkaSource
from connectors.metrics import EdgeMetrics
from connectors.processor import ProcessingConfig, ServedModel, StreamProcessor
from edge.config import EdgeConfig
from edge.http import EdgeHttpServer, HealthState
from edge.model import load_served_model

log = logging.getLogger("memae_ts.edge")


class EdgeDaemon:
    def __init__(self, config: EdgeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = EdgeMetrics(registry)
        self.health = HealthState(stall_after_seconds=max(60.0, config.processing.flush_timeout_seconds * 2))
        self._stop = False
        self._reload = False
        self.http: EdgeHttpServer | None = None
        self.processor: StreamProcessor | None = None

    # Signal handlers only set flags; the loop acts on them between batches.
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        self._stop = True
        self.health.stopping = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _load_model(self) -> ServedModel:
        model = load_served_model(self.config.model.path, self.config.model.engine, self.config.model.threads)
        log.info(
            "model loaded",
            extra={
                "path": self.config.model.path,
                "version": model.version,
                "engine": model.engine_name,
                "window": model.window,
                "sensors": len(model.sensors),
                "resample": model.resample.describe() if model.resample is not None else None,
            },
        )
        return model

    def _build(self, model: ServedModel) -> StreamProcessor:
        k = self.config.kafka
        p = self.config.processing
        client = k.client_config()
        sink = KafkaSink(client, k.output_topic, k.dead_letter_topic)
        sink.warm_up()

        def source_factory(on_revoked, on_assigned):  # type: ignore[no-untyped-def]
            def assigned(parts: set[int]) -> None:
                self.health.group_joined = True
                self.metrics.ready.set(1)
                on_assigned(parts)

            return KafkaSource(
                client,
                k.input_topic,
                k.group_id,
                batch_size=p.batch_size,
                auto_offset_reset=k.auto_offset_reset,
                max_rewind_messages=p.max_rewind_messages,
                session_timeout_ms=k.session_timeout_ms,
                on_revoked=on_revoked,
                on_assigned=assigned,
            )

        return StreamProcessor(
            source_factory,
            sink,
            model,
            self.metrics,
            ProcessingConfig(
                top_sensors=p.top_sensors,
                backwards_tolerance_seconds=p.backwards_tolerance_seconds,
                max_assets=p.max_assets,
                poll_timeout_ms=p.poll_timeout_ms,
                flush_timeout_s=p.flush_timeout_seconds,
            ),
        )

    def reload_model(self) -> bool:
        assert self.processor is not None
        try:
            model = self._load_model()
        except Exception as exc:  # any broken bundle: keep serving the old one
            log.error("model reload failed; keeping the current model", extra={"error": repr(exc)})
            self.metrics.model_reloads.labels(result="error").inc()
            return False
        self.processor.swap_model(model)
        self.metrics.model_reloads.labels(result="ok").inc()
        return True

    def run(self) -> int:
        model = self._load_model()
        self.health.model_loaded = True
        self.http = EdgeHttpServer(
            self.config.http.host, self.config.http.port, self.metrics.registry, self.health
        )
        self.http.start()
        log.info("http listening", extra={"port": self.http.port})
        self.processor = self._build(model)
        code = 0
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self.reload_model()
                self.processor.step()
                self.health.beat()
        except DeliveryFailed as exc:
            log.error("scores not acknowledged; exiting without commit", extra={"error": str(exc)})
            code = 1
        finally:
            t0 = time.monotonic()
            self.health.stopping = True
            self.metrics.ready.set(0)
            if code == 0:
                try:
                    self.processor.close()
                except DeliveryFailed as exc:  # last batch not acked: not committed either
                    log.error("last scores not acknowledged at shutdown", extra={"error": str(exc)})
                    code = 1
            else:
                self.processor.source.close()
                self.processor.sink.close(timeout_s=1.0)
            self.http.stop()
            log.info("stopped", extra={"exit_code": code, "close_seconds": time.monotonic() - t0})
        return code
