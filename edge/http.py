"""One small HTTP server for Prometheus and the supervisor: ``/metrics``, ``/healthz``, ``/readyz``.

Why one port: a gateway firewall rule and one scrape target. ``/healthz`` answers whether the
processing loop is alive (restart me if not); ``/readyz`` whether it has a model, has joined
its consumer group and reaches the broker (count me in dashboards; 503 during a broker outage).

Why asyncio on one thread instead of ``ThreadingHTTPServer``: a thread per connection with no
timeout let 300 idle sockets hold 300 threads, and each one closed by its client printed a
traceback into the JSON log. Here an idle connection costs a few KB and no thread; a client
gets ``timeout_seconds`` to send its request (else it is dropped); at most ``max_connections``
are open (more are closed at once); a request head is at most 8 KB; one request per connection
(HTTP/1.0 style, what Prometheus and probes need). A client that misbehaves is dropped without
a log line: a scanner on the plant network must not flood the journal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

_MAX_HEAD = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthState:
    """Written by the processing loop and the lag monitor, read by the HTTP thread."""

    def __init__(self, stall_after_seconds: float = 60.0, broker_timeout_seconds: float = 30.0) -> None:
        self.stall_after_seconds = stall_after_seconds
        self.broker_timeout_seconds = broker_timeout_seconds
        self.heartbeat = time.monotonic()
        self.broker_seen: float | None = None  # monotonic time the broker last answered
        self.model_loaded = False
        self.group_joined = False
        self.stopping = False
        # Per [[model]] section: {"loaded": true, "version": ...} or {"loaded": false, "error": ...}
        # (a model that cannot be loaded does not stop the others; /readyz shows it).
        self.models: dict[str, dict[str, Any]] = {}

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def broker_answered(self) -> None:
        self.broker_seen = time.monotonic()

    def broker_reachable(self) -> bool:
        seen = self.broker_seen
        return seen is not None and time.monotonic() - seen < self.broker_timeout_seconds

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.heartbeat
        return age < self.stall_after_seconds, {"loop_age_seconds": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        broker = self.broker_reachable()
        ok = self.model_loaded and self.group_joined and broker and not self.stopping
        return ok, {
            "model_loaded": self.model_loaded,
            "group_joined": self.group_joined,
            "broker_reachable": broker,
            "stopping": self.stopping,
            **({"models": self.models} if self.models else {}),
        }


class EdgeHttpServer:
    """``start`` runs the server on its own thread (with its own event loop); ``stop`` ends it."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthState,
        *,
        max_connections: int = 64,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.host = host
        self.registry = registry
        self.health = health
        self.max_connections = max_connections
        self.timeout_seconds = timeout_seconds
        self.open_connections = 0
        self.refused_connections = 0
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, host, port, limit=_MAX_HEAD, backlog=128)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        else:
            self._loop.run_until_complete(shutdown())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            self.refused_connections += 1
            writer.transport.abort()
            return
        self.open_connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_seconds)
            code, body, ctype = self._respond(head)
            writer.write(
                f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await asyncio.wait_for(writer.drain(), self.timeout_seconds)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # idle, slow, gone or oversized: dropped, nothing worth a log line
        except Exception:  # a bug here must not kill the server or flood the log
            log.debug("http request failed", exc_info=True)
        finally:
            self.open_connections -= 1
            writer.close()

    def _respond(self, head: bytes) -> tuple[int, bytes, str]:
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (UnicodeDecodeError, ValueError):
            return 400, b"bad request\n", "text/plain"
        if method != "GET":
            return 405, b"method not allowed\n", "text/plain"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST
        if path in ("/healthz", "/readyz"):
            ok, detail = self.health.healthy() if path == "/healthz" else self.health.ready()
            return (200 if ok else 503), json.dumps({"ok": ok, **detail}).encode(), "application/json"
        return 404, b"not found\n", "text/plain"
