"""The edge daemon: model + Kafka source/sink + HTTP endpoints, driven by signals.

* SIGTERM / SIGINT: finish the current batch, flush, commit, leave the group, exit 0.
* SIGHUP: load the bundle at ``model.path`` again (e.g. after ``rsync`` of a new model) and
  serve it from the next batch; readings are not lost because the swap happens between
  batches in the processing thread. A bundle that fails to load keeps the old model.
* A record the broker never acknowledged: exit 1 without committing (systemd restarts us and
  we resume from the last commit).

A message is never a reason to exit (it is a dead letter). The daemon exits only for what it
cannot survive, with a status that says which (docs/edge.md, "Exit status"):

* 1 ``EXIT_BROKER``: the broker unreachable past a deadline (scores unacknowledged for
  ``flush_timeout_seconds``, or no broker at start);
* 2 ``EXIT_CONFIG``: the configuration, including credentials the broker refuses, a failed TLS
  handshake, or a ``group_instance_id`` another daemon of the group already uses;
* 3 ``EXIT_MODEL``: the model at ``model.path`` cannot be loaded at start (at a SIGHUP reload
  the old model keeps serving instead).

Under systemd (``Type=notify``) it reports ``READY=1`` once it has a model and its Kafka
clients, pings the watchdog from the processing loop, and ``STOPPING=1`` on the way out.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from kafka.errors import FencedInstanceIdError
from prometheus_client import CollectorRegistry

from connectors.kafka_sink import BrokerAuthFailed, DeliveryFailed, KafkaSink
from connectors.kafka_source import KafkaSource
from connectors.metrics import EdgeMetrics
from connectors.processor import ProcessingConfig, ServedModel, StreamProcessor
from edge import systemd
from edge.config import EdgeConfig
from edge.http import EdgeHttpServer, HealthState
from edge.model import load_served_model
from edge.monitor import LagMonitor

log = logging.getLogger("memae_ts.edge")

EXIT_BROKER, EXIT_CONFIG, EXIT_MODEL = 1, 2, 3


class EdgeDaemon:
    def __init__(self, config: EdgeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = EdgeMetrics(registry)
        self.health = HealthState(
            stall_after_seconds=max(60.0, config.processing.flush_timeout_seconds * 2),
            broker_timeout_seconds=config.http.broker_timeout_seconds,
        )
        self._stop = False
        self._reload = False
        self.http: EdgeHttpServer | None = None
        self.processor: StreamProcessor | None = None
        self.monitor: LagMonitor | None = None
        self.watchdog = systemd.Watchdog()

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
        sink = KafkaSink(
            client, k.output_topic, k.dead_letter_topic, on_dead_letter_cut=self.metrics.dead_letter_cut
        )
        try:
            sink.warm_up()
        except BaseException:
            sink.close(timeout_s=0.5)
            raise

        def source_factory(on_revoked, on_assigned, on_rewound):  # type: ignore[no-untyped-def]
            return KafkaSource(
                client,
                k.input_topic,
                k.group_id,
                batch_size=p.batch_size,
                auto_offset_reset=k.auto_offset_reset,
                max_rewind_messages=p.max_rewind_messages,
                session_timeout_ms=k.session_timeout_ms,
                partition_assignment=k.partition_assignment,
                group_instance_id=k.group_instance_id,
                on_revoked=on_revoked,
                on_assigned=on_assigned,
                on_rewound=on_rewound,
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
                allowed_assets=tuple(p.assets),
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
        """Serve until SIGTERM; returns the exit status (module docstring)."""
        try:
            model = self._load_model()
        except Exception as exc:
            log.error(
                "model cannot be loaded; exiting", extra={"path": self.config.model.path, "error": repr(exc)}
            )
            return EXIT_MODEL
        self.health.model_loaded = True
        h = self.config.http
        self.http = EdgeHttpServer(
            h.host,
            h.port,
            self.metrics.registry,
            self.health,
            max_connections=h.max_connections,
            timeout_seconds=h.timeout_seconds,
        )
        self.http.start()
        log.info("http listening", extra={"host": h.host, "port": self.http.port})
        try:
            return self._serve(model)
        finally:
            self.http.stop()

    def _serve(self, model: ServedModel) -> int:
        try:
            self.processor = self._build(model)
        except BrokerAuthFailed as exc:
            log.error("kafka refused the credentials or TLS setup; exiting", extra={"error": str(exc)})
            return EXIT_CONFIG
        k = self.config.kafka
        self.monitor = LagMonitor(
            k.client_config(),
            k.input_topic,
            lambda: set(self.processor.source.assigned) if self.processor else set(),
            lambda: self.processor.positions if self.processor else {},
            self.metrics,
            self.health,
            interval_s=self.config.http.lag_interval_seconds,
        )
        self.monitor.start()
        systemd.notify("READY=1", "STATUS=joining the consumer group")
        code = 0
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self.reload_model()
                self.processor.step()
                self._beat()
        except DeliveryFailed as exc:
            log.error("scores not acknowledged; exiting without commit", extra={"error": str(exc)})
            code = EXIT_BROKER
        except FencedInstanceIdError:
            log.error(
                "another daemon of the group uses this group_instance_id; exiting",
                extra={"group_instance_id": k.group_instance_id},
            )
            code = EXIT_CONFIG
        finally:
            code = self._shut_down(code)
        return code

    def _beat(self) -> None:
        """After every poll: liveness for /healthz, the metric and the systemd watchdog."""
        assert self.processor is not None
        self.health.beat()
        self.metrics.loop_heartbeat.set(time.time())
        if not self.health.group_joined and self.processor.source.joined():
            self.health.group_joined = True
            self.metrics.ready.set(1)
            systemd.notify("STATUS=scoring")
        self.watchdog.ping()

    def _shut_down(self, code: int) -> int:
        assert self.processor is not None
        t0 = time.monotonic()
        systemd.notify("STOPPING=1")
        self.health.stopping = True
        self.metrics.ready.set(0)
        if self.monitor is not None:
            self.monitor.stop()
        if code == 0:
            try:
                self.processor.close()
            except DeliveryFailed as exc:  # last batch not acked: not committed either
                log.error("last scores not acknowledged at shutdown", extra={"error": str(exc)})
                code = EXIT_BROKER
        else:
            self.processor.source.close()
            self.processor.sink.close(timeout_s=1.0)
        log.info("stopped", extra={"exit_code": code, "close_seconds": time.monotonic() - t0})
        return code
