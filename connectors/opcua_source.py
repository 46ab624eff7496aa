"""OPC UA source: tags of a PLC or SCADA server, subscribed with a sampling interval and
assembled into one reading per asset and tick.

Configuration (``[opcua]``): ``nodes`` maps, per asset, node ids to the model's sensors
(``[opcua.nodes."pump-7"]`` ``"ns=2;s=Pump7.Pressure" = "discharge_pressure_bar"``). One
subscription carries every node, with ``sampling_interval_ms`` (how often the server samples a
tag) and ``queue_size`` (values the server keeps per tag between two publishes, so a fast tag
is not thinned to its last value).

How a reading is assembled, and the decisions it takes (each one counted):

* **Tick.** A value belongs to the tick ``floor(source timestamp / tick)`` (``tick_seconds``,
  default the sampling interval); the reading's ``ts`` is the tick's start. The source
  timestamp is the PLC's time of the value; a value without one takes the server timestamp,
  then the time of arrival.
* **Two values in one tick:** the later one wins (``memae_ts_source_values_superseded_total``).
* **Unchanged tags:** a server reports changes only, so a tag with no notification in a tick
  keeps its last value (``memae_ts_source_values_held_total``); one never reported yet is
  missing (``memae_ts_source_tags_missing_total{sensor}``).
* **Bad status code** (``Bad*``: sensor failure, no communication, ...): the value is missing
  for that tick and for held ticks after it until a Good/Uncertain value arrives, counted in
  ``memae_ts_source_bad_quality_total{sensor}``; missing values are filled as offline scoring
  fills them (within the model's fill limit) or break the series. Uncertain values are used.
* **Closing a tick:** as soon as every tag of the asset has a value in it (and every older tick
  with it), else ``tick_wait_seconds`` of wall clock after its first value. A value for a tick
  already closed is late: dropped and counted in ``memae_ts_source_late_values_total``.

Reconnect: the connection is probed every second (a read of the server state); on loss the
client is closed and a new session and subscription are made with exponential backoff from
``reconnect_min_seconds`` to ``reconnect_max_seconds`` (``memae_ts_source_reconnects_total``).
On resubscription the server sends each tag's current value again: a value of a closed tick
is late (counted), a newer one starts the next tick.

Security (``security_policy``, ``security_mode``, ``certificate_file``, ``private_key_file``,
``server_certificate_file``): before every connection the server's endpoints are read (the
discovery service needs no security) and one with the configured policy and mode must be
there; the server certificate it presents must be the trusted one, byte for byte. A server
without such an endpoint, another certificate, or a server that does not trust ours is a
configuration error at start (exit status 2, one line saying which); the application URI the
daemon announces is the URI in its certificate's subjectAltName, as OPC UA requires.

Delivery (docs/edge.md): OPC UA keeps nothing for an absent client. Values that change while
the daemon is disconnected or down are not seen (the current value at reconnection is); what is
assembled but not yet scored when the daemon dies is lost. At-most-once; the local journal
(``source.state_dir``) keeps the windows across a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from datetime import timezone
from typing import Any

from asyncua import Client, ua
from memae_ts.connectors.messages import encode_reading_object
from memae_ts.connectors.sources import LocalSource, SourceConfigError, SourceMetrics, SourceUnavailable
from memae_ts.connectors.ticks import PendingReading, TickBuffer

log = logging.getLogger(__name__)

# Status codes that no reconnect can fix: the configuration must change (exit status 2).
_CONFIG_STATUS = {
    "BadUserAccessDenied",
    "BadIdentityTokenInvalid",
    "BadIdentityTokenRejected",
    "BadSecurityPolicyRejected",
    "BadCertificateInvalid",
    "BadCertificateUntrusted",
    "BadCertificateUriInvalid",
    "BadCertificateTimeInvalid",
    "BadCertificateUseNotAllowed",
    "BadCertificateRevoked",
    "BadCertificateIssuerRevoked",
    "BadSecurityModeRejected",
    "BadSecurityChecksFailed",
}
_NO_SECURITY = "http://opcfoundation.org/UA/SecurityPolicy#None"


class _Security:
    """The gateway's certificate, key and trusted server certificate, checked once at start so a
    wrong file is one line naming the option (exit status 2), not a failed handshake later."""

    def __init__(self, settings: Any) -> None:
        from asyncua.crypto import security_policies
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self.policy = getattr(security_policies, f"SecurityPolicy{settings.security_policy}")
        self.mode = getattr(ua.MessageSecurityMode, settings.security_mode)
        self.certificate_file = settings.certificate_file
        self.private_key_file = settings.private_key_file
        cert = _read_certificate("opcua.certificate_file", settings.certificate_file)
        raw = _read("opcua.private_key_file", settings.private_key_file)
        try:
            key = (
                serialization.load_pem_private_key(raw, None)
                if raw.lstrip().startswith(b"-----")
                else serialization.load_der_private_key(raw, None)
            )
        except (ValueError, TypeError) as exc:
            raise SourceConfigError(
                f"opcua.private_key_file {settings.private_key_file}: not an unencrypted private key ({exc})"
            ) from None
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise SourceConfigError(
                f"opcua.private_key_file {settings.private_key_file} is not the key of "
                f"opcua.certificate_file {settings.certificate_file}"
            )
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if not uris:
            raise SourceConfigError(
                f"opcua.certificate_file {settings.certificate_file}: no URI in its subjectAltName "
                "(OPC UA needs the application URI there)"
            )
        self.application_uri = uris[0]
        self.server_der: bytes | None = None
        if settings.server_certificate_file:
            trusted = _read_certificate("opcua.server_certificate_file", settings.server_certificate_file)
            self.server_der = trusted.public_bytes(serialization.Encoding.DER)


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SourceConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _read_certificate(key: str, path: str) -> Any:
    from cryptography import x509

    raw = _read(key, path)
    try:
        if raw.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise SourceConfigError(f"{key} {path}: not an X.509 certificate in PEM or DER ({exc})") from None


def _policy_name(uri: str) -> str:
    return uri.rpartition("#")[2]


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


class TickAssembler(TickBuffer):
    """Per asset, values -> readings per tick (module docstring). Thread-safe."""

    def __init__(
        self,
        sensors_by_asset: dict[str, list[str]],
        tick_s: float,
        wait_s: float,
        metrics: SourceMetrics,
        emit: Any,
    ):
        super().__init__(sensors_by_asset.__getitem__, wait_s, metrics)
        self.tick_s = tick_s
        self._emit = emit
        self.held: dict[str, dict[str, float | None]] = {a: {} for a in sensors_by_asset}

    def tick_of(self, ts: float) -> float:
        return math.floor(ts / self.tick_s + 1e-9) * self.tick_s

    def add(self, asset: str, sensor: str, ts: float, value: float | None) -> None:
        self.put(asset, sensor, self.tick_of(ts), value)  # a late value is counted and dropped

    def _close(self, asset: str, ts: float, reading: PendingReading) -> None:
        held = self.held[asset]
        values: dict[str, float | None] = {}
        for s in self.sensors_of(asset):
            if s in reading.values:
                values[s] = held[s] = reading.values[s]
            elif s in held:
                values[s] = held[s]
                self.metrics.held.inc()
            else:
                values[s] = None
            if values[s] is None:
                self.metrics.tags_missing.labels(source=self.metrics.kind, sensor=s).inc()
        self._emit(asset, ts, values)


class _Handler:
    """asyncua subscription handler: runs on the source's event loop thread."""

    def __init__(self, source: OpcuaSource) -> None:
        self.source = source

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.source._on_value(node, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        log.warning("opcua subscription status changed", extra={"status": str(status)})


class OpcuaSource(LocalSource):
    kind = "opcua"

    def __init__(
        self,
        settings: Any,
        metrics: SourceMetrics,
        *,
        startup_timeout_s: float = 60.0,
        **journal: Any,
    ) -> None:
        super().__init__(metrics, **journal)  # batch_size, state_dir, max_journal (LocalSource)
        asyncua_log = logging.getLogger("asyncua")
        if asyncua_log.level == logging.NOTSET:  # it logs every publish response at INFO
            asyncua_log.setLevel(logging.WARNING)
        self.settings = settings
        self.routes: dict[str, tuple[str, str]] = {}  # normalised node id -> (asset, sensor)
        sensors: dict[str, list[str]] = {}
        for asset, mapping in settings.nodes.items():
            sensors[asset] = []
            for node_id, sensor in mapping.items():
                try:
                    key = ua.NodeId.from_string(node_id).to_string()
                except Exception as exc:  # asyncua raises several types for a bad node id
                    raise SourceConfigError(f"opcua.nodes.{asset}: bad node id {node_id!r}: {exc}") from None
                self.routes[key] = (asset, sensor)
                sensors[asset].append(sensor)
        metrics.pre_create(sorted({s for names in sensors.values() for s in names}))
        self.security = _Security(settings) if settings.security_policy else None
        tick_s = settings.tick_seconds or settings.sampling_interval_ms / 1000
        self.assembler = TickAssembler(sensors, tick_s, settings.tick_wait_seconds, metrics, self._emit)
        self._loop = asyncio.new_event_loop()
        self._stopping = False
        self._first_error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name="opcua", daemon=True)
        self._thread.start()
        if not self._started.wait(startup_timeout_s):
            self._disconnect()
            raise SourceUnavailable(
                f"opcua server {settings.endpoint} not reachable in {startup_timeout_s:.0f}s"
            )
        if self._first_error is not None:
            self._disconnect()
            raise self._first_error

    # -- event loop thread ---------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._supervise())
        finally:
            self._loop.close()

    async def _supervise(self) -> None:
        s = self.settings
        delay = s.reconnect_min_seconds
        first = True
        while not self._stopping:
            client = Client(s.endpoint, timeout=s.timeout_seconds)
            try:
                if s.username:
                    client.set_user(s.username)
                    client.set_password(s.password)
                if s.security:
                    await client.set_security_string(s.security)
                else:
                    await self._secure(client)
                await client.connect()
                sub = await client.create_subscription(s.sampling_interval_ms, _Handler(self))
                nodes = [client.get_node(n) for n in self.routes]
                results = await sub.subscribe_data_change(
                    nodes, queuesize=s.queue_size, sampling_interval=s.sampling_interval_ms
                )
                for node, result in zip(
                    nodes, results if isinstance(results, list) else [results], strict=True
                ):
                    if isinstance(result, ua.StatusCode):
                        log.error(
                            "opcua node cannot be monitored; its sensor stays missing",
                            extra={"node": node.nodeid.to_string(), "status": result.name},
                        )
                if not first:
                    self.metrics.reconnects.inc()
                log.info(
                    "opcua subscribed", extra={"endpoint": s.endpoint, "nodes": len(nodes), "first": first}
                )
                first = False
                delay = s.reconnect_min_seconds
                self._set_connected(True)
                self._connected_once.set()
                self._started.set()
                state = client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State))
                while not self._stopping:  # probe: a dead server or network shows within ~1 s
                    await asyncio.sleep(1.0)
                    await asyncio.wait_for(state.read_value(), s.timeout_seconds)
            except Exception as exc:
                code = type(exc).__name__  # asyncua: one exception class per status code
                if first and isinstance(exc, SourceConfigError):
                    self._first_error = exc
                    self._started.set()
                    return
                if first and code in _CONFIG_STATUS:
                    hint = " (its trust list must hold opcua.certificate_file)" if "Certif" in code else ""
                    self._first_error = SourceConfigError(
                        f"opcua server {s.endpoint} refused us: {code}{hint}"
                    )
                    self._started.set()
                    return
                if not self._stopping:
                    log.warning(
                        "opcua connection lost or refused; reconnecting",
                        extra={"endpoint": s.endpoint, "error": repr(exc), "retry_in_s": delay},
                    )
            finally:
                self._set_connected(False)
                try:
                    await asyncio.wait_for(client.disconnect(), 2.0)
                except Exception:  # the connection is gone already
                    pass
            if self._stopping:
                return
            await self._sleep(delay)
            delay = min(s.reconnect_max_seconds, delay * 2)

    async def _secure(self, client: Client) -> None:
        """Read the server's endpoints (no security needed for that), insist on one with our
        policy and mode and, when one is configured, on the trusted server certificate; then
        set the client's security (module docstring). Raises SourceConfigError."""
        s, sec = self.settings, self.security
        endpoints = await client.connect_and_get_server_endpoints()
        policy_uri = sec.policy.URI if sec is not None else _NO_SECURITY
        mode = sec.mode if sec is not None else ua.MessageSecurityMode.None_
        match = [e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == mode]
        if not match:
            offered = sorted(
                {f"{_policy_name(e.SecurityPolicyUri)}/{e.SecurityMode.name.rstrip('_')}" for e in endpoints}
            )
            wanted = f"{s.security_policy}/{s.security_mode}" if sec is not None else "None (no security)"
            raise SourceConfigError(
                f"opcua server {s.endpoint} offers no endpoint with security {wanted} "
                f"(it offers {', '.join(offered)}; opcua.security_policy, opcua.security_mode)"
            )
        if sec is None:
            return
        from asyncua.crypto.uacrypto import x509_from_der
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509_from_der(bytes(match[0].ServerCertificate or b""))  # a chain: its first
        presented = cert.public_bytes(Encoding.DER) if cert is not None else b""
        if sec.server_der is None:
            log.warning(
                "opcua server certificate trusted without a check (opcua.server_certificate_file empty)",
                extra={"endpoint": s.endpoint, "sha256": _fingerprint(presented)},
            )
        elif presented != sec.server_der:
            raise SourceConfigError(
                f"opcua server {s.endpoint} presents certificate sha256 {_fingerprint(presented)}, "
                "not the trusted one in opcua.server_certificate_file "
                f"(sha256 {_fingerprint(sec.server_der)})"
            )
        client.application_uri = sec.application_uri
        await client.set_security(
            sec.policy, sec.certificate_file, sec.private_key_file,
            server_certificate=presented, mode=sec.mode,
        )  # fmt: skip

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))
            self.assembler.expire()

    def _on_value(self, node: Any, dv: Any) -> None:
        self.metrics.messages.inc()
        route = self.routes.get(node.nodeid.to_string())
        if route is None:
            return
        asset, sensor = route
        stamp = dv.SourceTimestamp or dv.ServerTimestamp
        ts = stamp.replace(tzinfo=stamp.tzinfo or timezone.utc).timestamp() if stamp else time.time()
        value: float | None
        if dv.StatusCode is not None and dv.StatusCode.is_bad():
            self.metrics.bad_quality.labels(source=self.kind, sensor=sensor).inc()
            value = None
        else:
            raw = dv.Value.Value if dv.Value is not None else None
            try:
                value = None if raw is None else float(raw)
            except (TypeError, ValueError):
                value = None
                log.warning(
                    "opcua value is not a number; missing", extra={"sensor": sensor, "value": repr(raw)[:80]}
                )
            if value is not None and not math.isfinite(value):
                value = None
        self.assembler.add(asset, sensor, ts, value)

    def _emit(self, asset: str, ts: float, values: dict[str, float | None]) -> None:
        self.offer(f"opcua/{asset}", asset.encode(), encode_reading_object(asset, ts, values), None)

    # -- processor thread ----------------------------------------------------------------

    def poll(self, timeout_ms: int) -> list[Any]:
        self.assembler.expire()
        return super().poll(timeout_ms)

    def _acknowledge(self, token: Any) -> None:
        """OPC UA has no acknowledgement: a value the server sent is never sent again."""

    def _disconnect(self) -> None:
        self._stopping = True
        self._thread.join(10)
