"""The edge daemon: model + Kafka source/sink + HTTP endpoints, driven by signals.

* SIGTERM / SIGINT: finish the current batch, flush, commit, leave the group, exit 0.
* SIGHUP: load the bundle at ``model.path`` again (e.g. after ``rsync`` of a new model) and
  serve it from the next batch; readings are not lost because the swap happens between
  batches in the processing thread. A bundle that fails to load keeps the old model.
* SIGUSR1: write every thread's stack to stderr (the journal under systemd) and go on: what a
  daemon that does not stop, or stops scoring, is waiting for.
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

import faulthandler
import logging
import signal
import time
from types import FrameType
from typing import Any

from memae_ts.connectors.kafka_sink import BrokerAuthFailed, DeliveryFailed, KafkaSink
from memae_ts.connectors.kafka_source import InstanceFenced, KafkaSource
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ModelRoute, ProcessingConfig, ServedModel, StreamProcessor
from memae_ts.edge import systemd
from memae_ts.edge.config import EdgeConfig, ModelSection
from memae_ts.edge.http import EdgeHttpServer, HealthState
from memae_ts.edge.model import bundle_files, bundle_version, load_served_model
from memae_ts.edge.monitor import LagMonitor
from memae_ts.edge.source_setup import build_sink, local_source_factory, source_exit_status
from prometheus_client import CollectorRegistry

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
        self._routes: list[ModelRoute] = []
        self._loaded_hash: dict[str, str] = {}  # per [[model]]: content hash at its last load
        # model.reload = "on-change", per [[model]]: the bundle files' stat at the last look, the
        # one last acted on, when to look next, and the content hash last refused (logged once).
        self._bundle_seen: dict[str, tuple[Any, ...]] = {}
        self._bundle_acted: dict[str, tuple[Any, ...]] = {}
        self._next_look: dict[str, float] = {}
        self._refused: dict[str, str] = {}

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
        # In C, from any state of the interpreter (even with the main thread stuck in a lock).
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def _load_model(self, section: ModelSection | None = None) -> ServedModel:
        section = section or self.config.model
        self._bundle_seen[section.name] = self._bundle_acted[section.name] = bundle_files(section.path)
        version = bundle_version(section.path)
        model = load_served_model(
            section.path, section.engine, section.threads, section.name, follow=section.follow_settings()
        )
        self._loaded_hash[section.name] = version  # only once loaded: a refused one is not "served"
        log.info(
            "model loaded",
            extra={
                "model": section.name,
                "path": section.path,
                "version": model.version,
                "engine": model.engine_name,
                "window": model.window,
                "sensors": len(model.sensors),
                "resample": model.resample.describe() if model.resample is not None else None,
            },
        )
        return model

    def _kafka_sink(self) -> KafkaSink:
        k = self.config.kafka
        options: dict[str, Any] = {
            "on_dead_letter_cut": self.metrics.dead_letter_cut,
            "episodes_topic": k.episodes_topic or None,
        }
        if self.config.processing.delivery == "exactly-once":
            from memae_ts.connectors.kafka_txn import TransactionalSink

            txn_id = k.transactional_id or f"memae-ts:{k.group_id}:{k.group_instance_id or k.client_id}"
            sink: KafkaSink = TransactionalSink(
                k.client_config(), k.output_topic, k.dead_letter_topic,
                transactional_id=txn_id, transaction_timeout_ms=k.transaction_timeout_ms,
                on_abort=lambda reason: self.metrics.transactions_aborted.labels(reason).inc(), **options,
            )  # fmt: skip
        else:
            sink = KafkaSink(k.client_config(), k.output_topic, k.dead_letter_topic, **options)
        try:
            sink.warm_up()
        except BaseException:
            sink.close(timeout_s=0.5)
            raise
        return sink

    def _build(self, model: ServedModel) -> StreamProcessor:
        k = self.config.kafka
        p = self.config.processing
        client = k.client_config()
        # [source]: Kafka in and out is the daemon's own path; MQTT/OPC UA in or MQTT out are
        # built by edge/source_setup.py (optional extras).
        sink: Any = build_sink(self.config, self._kafka_sink)

        def kafka_source_factory(on_revoked, on_assigned, on_rewound):  # type: ignore[no-untyped-def]
            # One construction path: the transactional source (exactly-once) takes the sink it
            # commits its offsets through, and otherwise the same settings.
            options: dict[str, Any] = {
                "batch_size": p.batch_size,
                "auto_offset_reset": k.auto_offset_reset,
                "max_rewind_messages": p.max_rewind_messages,
                "session_timeout_ms": k.session_timeout_ms,
                "partition_assignment": k.partition_assignment,
                "group_instance_id": k.group_instance_id,
                "on_revoked": on_revoked,
                "on_assigned": on_assigned,
                "on_rewound": on_rewound,
                # No completed join for this long while the broker answers: a new consumer.
                "rebalance_stuck_s": k.rebalance_stuck_seconds,
                "linger_ms": k.linger_ms,
                "fetch_wait_max_ms": k.fetch_wait_max_ms,
                "fetch_min_bytes": k.fetch_min_bytes,
                "on_stuck": lambda reason: self.metrics.rebalance_stuck.inc(),
                # A broker outage is waited out for flush_timeout_seconds here too.
                "committed_timeout_s": p.flush_timeout_seconds,
            }
            if p.delivery == "exactly-once":
                from memae_ts.connectors.kafka_txn import TransactionalSource

                return TransactionalSource(client, k.input_topic, k.group_id, sink, **options)
            return KafkaSource(client, k.input_topic, k.group_id, **options)

        source_factory: Any = kafka_source_factory
        if self.config.source.kind != "kafka":
            source_factory = local_source_factory(
                self.config, self.metrics.registry, self._sensors_for(model), sink, self.metrics.invalid
            )
        return StreamProcessor(
            source_factory,
            sink,
            self._routes or model,
            self.metrics,
            ProcessingConfig(
                top_sensors=p.top_sensors,
                backwards_tolerance_seconds=p.backwards_tolerance_seconds,
                max_assets=p.max_assets,
                poll_timeout_ms=p.poll_timeout_ms,
                flush_timeout_s=p.flush_timeout_seconds,
                allowed_assets=tuple(p.assets),
                hop=p.hop,
                # [kafka] commit_interval_ms: the Kafka source's commit policy only (MQTT and
                # OPC UA sources acknowledge with every checkpoint, as before).
                commit_interval_s=k.commit_interval_ms / 1000 if self.config.source.kind == "kafka" else 0.0,
            ),
        )

    def _sensors_for(self, fallback: ServedModel) -> Any:
        """asset -> the sensors of the model serving it (MQTT tag form: what completes a
        reading); ``fallback``'s until the processor and its lanes exist."""

        def sensors(asset: str) -> list[str]:
            for lane in getattr(self.processor, "lanes", ()):
                if lane.model is not None and lane.serves(asset):
                    return list(lane.model.sensors)
            return list(fallback.sensors)

        return sensors

    def _load_models(self) -> list[ModelRoute]:
        """Every [[model]] section's model; one that cannot be loaded is reported (log line,
        ``memae_ts_model_up{model} 0``, /readyz detail) and its assets dead-lettered."""
        routes = []
        for section in self.config.models:
            try:
                routes.append(ModelRoute(section.name, tuple(section.assets), self._load_model(section)))
            except Exception as exc:
                log.error(
                    "model cannot be loaded; its assets are dead letters (model_unavailable) until a "
                    "SIGHUP loads it",
                    extra={"model": section.name, "path": section.path, "error": repr(exc)},
                )
                routes.append(ModelRoute(section.name, tuple(section.assets), None, repr(exc)[:300]))
        return routes

    def _report_models(self) -> None:
        """/readyz detail: per [[model]] section, whether it serves and what (shown when there
        are several sections or one is not loaded)."""
        assert self.processor is not None
        lanes = self.processor.lanes
        if len(lanes) == 1 and lanes[0].model is not None:
            self.health.models = {}
            return
        self.health.models = {
            lane.name: (
                {"loaded": True, "version": lane.model.version}
                if lane.model is not None
                else {"loaded": False, "error": lane.error}
            )
            for lane in self.processor.lanes
        }

    def changed_bundles(self) -> set[str]:
        """``model.reload = "on-change"``: the [[model]] sections whose bundle files (size, mtime,
        inode) changed and then stayed the same for one look — a copy still being written is
        not loaded half-way. Only ``stat`` calls, each section at most every
        ``reload_check_seconds``; the content hash is compared by :meth:`reload_model`."""
        now = time.monotonic()
        changed = set()
        for section in self.config.models:
            if section.reload != "on-change" or now < self._next_look.get(section.name, 0.0):
                continue
            self._next_look[section.name] = now + section.reload_check_seconds
            files = bundle_files(section.path)
            stable = files == self._bundle_seen.get(section.name)
            self._bundle_seen[section.name] = files
            if stable and files != self._bundle_acted.get(section.name):
                self._bundle_acted[section.name] = files
                changed.add(section.name)
        return changed

    def reload_model(self, names: set[str] | None = None) -> bool:
        """SIGHUP (``names`` None): load again every model whose bundle changed (content hash)
        or that is not loaded; the others keep serving untouched. A bundle that fails keeps its
        old model. ``names``: only those models, after :meth:`changed_bundles` saw their files
        change; a version refused before is not tried (or logged, or counted) again."""
        assert self.processor is not None
        ok = True
        for section in self.config.models:
            if names is not None and section.name not in names:
                continue
            lane = self.processor.lane(section.name)
            version = ""
            try:
                version = bundle_version(section.path)
                unchanged = version == self._loaded_hash.get(section.name)
                if names is not None and (unchanged or version == self._refused.get(section.name)):
                    continue  # touched, or copied back, but the same bytes
                if lane.model is not None and unchanged:
                    follower = getattr(lane.model.engine, "follower", None)
                    if follower is not None:  # SIGHUP also puts back the trained memory
                        follower.reset()
                        log.info("memory reset to the trained one", extra={"model": section.name})
                        self.processor.observe_follow(section.name)
                    continue
                model = self._load_model(section)
            except Exception as exc:  # any broken bundle: keep serving the old one
                self._refused[section.name] = version
                log.error(
                    "model reload failed; keeping the current model"
                    if lane.model is not None
                    else "model reload failed; its assets stay dead letters",
                    extra={
                        "model": section.name,
                        "path": section.path,
                        "bundle_hash": version,
                        "trigger": "signal" if names is None else "bundle changed",
                        "error": repr(exc),
                    },
                )
                self.metrics.model_reloads.labels(result="error").inc()
                self.processor.model_failed(section.name, repr(exc)[:300])
                ok = False
                continue
            self.processor.swap_model(model, section.name)
            self.metrics.model_reloads.labels(result="ok").inc()
        self._report_models()
        return ok

    def run(self) -> int:
        """Serve until SIGTERM; returns the exit status (module docstring)."""
        routes = self._load_models()
        loaded = [r.model for r in routes if r.model is not None]
        if not loaded:
            log.error(
                "no model can be loaded; exiting",
                extra={"paths": [s.path for s in self.config.models], "errors": [r.error for r in routes]},
            )
            return EXIT_MODEL
        self._routes = routes
        model = loaded[0]
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
        except Exception as exc:  # MQTT/OPC UA clients: refused credentials or TLS, no broker
            code = source_exit_status(exc)
            if code is None:
                raise
            log.error("source or sink cannot start; exiting", extra={"error": str(exc), "exit_code": code})
            return code
        self._report_models()
        k = self.config.kafka
        if self.config.source.kind != "kafka":
            systemd.notify("READY=1", f"STATUS=reading from {self.config.source.kind}")
            return self._loop(k)
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
        return self._loop(k)

    def _loop(self, k: Any) -> int:
        assert self.processor is not None
        code = 0
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self.reload_model()
                else:
                    changed = self.changed_bundles()  # model.reload = "on-change"
                    if changed:
                        self.reload_model(changed)
                self.processor.step()
                self._beat()
        except DeliveryFailed as exc:
            log.error("scores not acknowledged; exiting without commit", extra={"error": str(exc)})
            code = EXIT_BROKER
        except InstanceFenced:
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
        if self.monitor is None and hasattr(self.processor.source, "connected"):
            up = self.processor.source.connected()  # MQTT/OPC UA: no lag monitor; the client knows
            self.metrics.broker_up.set(1 if up else 0)
            if up:
                self.health.broker_answered()
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
