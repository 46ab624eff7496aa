"""The daemon's HTTP endpoint as a real server on a loopback port: bounded in threads and
connections, idle clients dropped after the timeout, nothing printed for misbehaving clients."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.edge.http import EdgeHttpServer, HealthState
from prometheus_client import CollectorRegistry


@pytest.fixture
def server():
    metrics = EdgeMetrics(CollectorRegistry())
    health = HealthState()
    health.model_loaded = health.group_joined = True
    health.broker_answered()
    srv = EdgeHttpServer("127.0.0.1", 0, metrics.registry, health, max_connections=32, timeout_seconds=1.0)
    srv.start()
    yield srv
    srv.stop()


def get(srv: EdgeHttpServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_endpoints_answer(server):
    code, body = get(server, "/metrics")
    assert code == 200 and b"memae_ts_readings_total" in body
    assert get(server, "/healthz")[0] == 200
    code, body = get(server, "/readyz")
    assert code == 200 and json.loads(body)["broker_reachable"] is True
    assert get(server, "/nope")[0] == 404


def test_readiness_drops_when_the_broker_stops_answering():
    health = HealthState(broker_timeout_seconds=0.2)
    health.model_loaded = health.group_joined = True
    assert health.ready()[0] is False  # never heard from the broker yet
    health.broker_answered()
    assert health.ready()[0] is True
    time.sleep(0.3)
    ok, detail = health.ready()
    assert ok is False and detail["broker_reachable"] is False


def test_300_idle_connections_cost_no_thread_and_no_log_line(server, capfd):
    """Issue #14: 300 idle sockets held 300 threads, and closing them printed 296 tracebacks."""
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= threads_before
        assert server.open_connections <= 32
        # Those over the limit were closed at once; the others after the timeout (1 s).
        time.sleep(1.5)
        for sock in idle:
            sock.settimeout(2)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
        assert server.open_connections == 0
        assert get(server, "/metrics")[0] == 200  # and it serves again
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Exception" not in out + err


def test_a_slow_or_oversized_request_is_dropped(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000)
        sock.settimeout(3)
        try:
            assert sock.recv(100) == b""  # oversized head: closed without an answer
        except ConnectionResetError:
            pass
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /metr")  # and then nothing
        sock.settimeout(3)
        t0 = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - t0 < 2.5
    assert get(server, "/healthz")[0] == 200
