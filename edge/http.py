"""One small HTTP server for Prometheus and the supervisor: ``/metrics``, ``/healthz``, ``/readyz``.

Why one port: a gateway firewall rule and one scrape target. ``/healthz`` answers whether the
processing loop is alive (restart me if not); ``/readyz`` whether it has a model and has joined
its consumer group (route traffic / count me in dashboards).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Written by the processing loop, read by the HTTP thread."""

    def __init__(self, stall_after_seconds: float = 60.0) -> None:
        self.stall_after_seconds = stall_after_seconds
        self.heartbeat = time.monotonic()
        self.model_loaded = False
        self.group_joined = False
        self.stopping = False

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.heartbeat
        return age < self.stall_after_seconds, {"loop_age_seconds": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self.model_loaded and self.group_joined and not self.stopping
        return ok, {
            "model_loaded": self.model_loaded,
            "group_joined": self.group_joined,
            "stopping": self.stopping,
        }


class EdgeHttpServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthState):
        registry_ = registry
        health_ = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, detail = health_.healthy() if path == "/healthz" else health_.ready()
                    body = json.dumps({"ok": ok, **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
