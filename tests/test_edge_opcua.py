"""The edge daemon with ``[source] kind = "opcua"`` against a real OPC UA server (asyncua's,
binary protocol on loopback, its own process: tests/opcua_server.py), scores out over MQTT to a
real Mosquitto broker, compared with ``memae-ts score`` of the same rows."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from edge_process import EdgeProcess
from fixtures_mqtt import records
from kafka_service import REPO, free_port, port_open
from memae_ts.edge.replay import sensors_of_bundle
from test_edge_kafka import assert_matches_offline, metric, score_offline

pytestmark = [pytest.mark.opcua, pytest.mark.mqtt, pytest.mark.slow, pytest.mark.timeout(240)]

SERVER = Path(__file__).with_name("opcua_server.py")


class OpcuaServer:
    def __init__(self, port: int, assets: dict[str, Path], secure: Path | None = None) -> None:
        self.port = port
        self.assets = assets
        self.flags = [f"--secure={secure}"] if secure is not None else []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, first: int, end: int, rate: float = 100.0) -> OpcuaServer:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.port), str(first), str(end), str(rate),
             *(f"{a}={p}" for a, p in self.assets.items()), *self.flags],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            assert self.proc.poll() is None, "opcua server exited"
            assert time.monotonic() < deadline, "opcua server not listening"
            time.sleep(0.05)
        return self

    def wait_written(self, timeout: float = 90) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until the rows are written (or it dies)
        assert line.startswith("written"), line
        assert time.monotonic() < deadline

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def test_tags_assembled_per_tick_are_scored_like_offline_through_a_server_restart(
    broker_factory,
    clients,
    edge_data,
    tmp_path,
):
    """Two assets, one subscription, one reading per asset and tick; Bad status codes are
    missing values (filled as offline, counted per sensor); the server is SIGKILLed mid-stream
    and started again on the same port: the daemon reconnects with backoff, subscribes again
    and scores every row."""
    sensors = sensors_of_bundle(edge_data.model)
    frame = pd.read_csv(edge_data.csv).iloc[:240].reset_index(drop=True)
    faulty = frame.copy()
    faulty.loc[40:41, sensors[1]] = np.nan  # a sensor failure for two minutes: Bad status
    faulty.loc[200, sensors[3]] = np.nan
    csv1, csv2 = tmp_path / "asset-1.csv", tmp_path / "asset-2.csv"
    frame.to_csv(csv1, index=False)
    faulty.to_csv(csv2, index=False)
    offline1, offline2 = score_offline(edge_data.model, csv1), score_offline(edge_data.model, csv2)

    broker = broker_factory()
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    port = free_port()
    server = OpcuaServer(port, {"asset-1": csv1, "asset-2": csv2}).start(0, 120)
    daemon = EdgeProcess(
        tmp_path / "edge", bootstrap="127.0.0.1:9", input_topic="-", output_topic="-", dead_letter_topic="-",
        group="-", model=edge_data.model, batch_size=50,
        config={
            "source": {"kind": "opcua", "outputs": ["mqtt"], "state_dir": str(tmp_path / "state")},
            "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}/memae-ts/", "sampling_interval_ms": 20,
                      "tick_seconds": 60, "tick_wait_seconds": 2.0, "queue_size": 100,
                      "reconnect_min_seconds": 0.5, "reconnect_max_seconds": 4},
            "mqtt": {"port": broker.port, "client_id": "gw", "score_topic": "out/scores/{asset}"},
        },
    )  # fmt: skip
    with open(daemon.config, "a") as fh:
        for asset in ("asset-1", "asset-2"):
            fh.write(f'[opcua.nodes."{asset}"]\n')
            fh.writelines(f'"ns=2;s={asset}.{s}" = "{s}"\n' for s in sensors)
    try:
        daemon.start()
        server.wait_written()
        half = (offline1.timestamp <= frame.timestamp[119]).sum()
        watcher.wait("out/scores/asset-1", half, timeout=30)
        server.kill()
        time.sleep(1.5)  # the daemon notices and starts its backoff
        server.start(120, 240)
        server.wait_written()
        got = watcher.wait("out/scores/", len(offline1) + len(offline2), timeout=60)
        assert_matches_offline(records([m for m in got if m[0].endswith("asset-1")]), offline1, "asset-1")
        assert_matches_offline(records([m for m in got if m[0].endswith("asset-2")]), offline2, "asset-2")
        assert len(got) == len(offline1) + len(offline2)  # nothing scored twice
        assert metric(daemon, "memae_ts_source_bad_quality_total", source="opcua", sensor=sensors[1]) >= 1
        assert metric(daemon, "memae_ts_source_bad_quality_total", source="opcua", sensor=sensors[3]) >= 1
        assert metric(daemon, "memae_ts_source_bad_quality_total", source="opcua", sensor=sensors[0]) == 0
        assert metric(daemon, "memae_ts_source_reconnects_total", source="opcua") >= 1
        assert metric(daemon, "memae_ts_source_connected", source="opcua") == 1
        assert daemon.stop() == 0
    finally:
        server.kill()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def test_an_unreachable_server_exits_with_status_1_and_a_bad_node_id_with_2(
    broker_factory,
    tmp_path,
    edge_data,
):
    broker = broker_factory()
    base = {
        "source": {"kind": "opcua", "outputs": ["mqtt"], "startup_timeout_seconds": 3},
        "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}/", "timeout_seconds": 1},
        "mqtt": {"port": broker.port},
    }
    for name, node, status, words in (
        ("down", "ns=2;s=a.b", 1, "not reachable"),
        ("bad-node", "ns=2;x=what", 2, "bad node id"),
    ):
        daemon = EdgeProcess(
            tmp_path / name, bootstrap="127.0.0.1:9", input_topic="-", output_topic="-",
            dead_letter_topic="-", group="-", model=edge_data.model, config=base,
        )  # fmt: skip
        with open(daemon.config, "a") as fh:
            fh.write(f'[opcua.nodes."pump-1"]\n"{node}" = "x"\n')
        t0 = time.monotonic()
        daemon.start(wait_ready=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == status, daemon.logs()[-2000:]
        assert time.monotonic() - t0 < 30
        assert words in daemon.logs()


def make_certificates(folder: Path) -> Path:
    """Self-signed application certificates as a plant issues them (URI in subjectAltName):
    the server's, the gateway's (in the server's trust list), an intruder's with the gateway's
    URI, and a fake server's with the server's URI."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    (folder / "trust").mkdir(parents=True)
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    for name, uri, usage in (
        ("server", "urn:plant:plc-7", server),
        ("gateway", "urn:plant:gateway-3", client),
        ("intruder", "urn:plant:gateway-3", client),
        ("fake-server", "urn:plant:plc-7", server),
    ):
        key = cert_gen.generate_private_key()
        names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
        cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [usage])
        (folder / f"{name}.der").write_bytes(cert.public_bytes(Encoding.DER))
        (folder / f"{name}.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    (folder / "trust" / "gateway.der").write_bytes((folder / "gateway.der").read_bytes())
    return folder


def test_basic256sha256_with_trusted_certificates_scores_and_a_wrong_certificate_exits_2(
    broker_factory, clients, edge_data, tmp_path
):
    """A server that offers only Basic256Sha256 and trusts only the gateway's certificate: with
    the right certificate, key and pinned server certificate the readings are scored like
    offline (SignAndEncrypt); an untrusted client certificate, a server presenting another
    certificate than the pinned one, a key of another certificate and no security at all each
    stop the start with exit status 2 and one line saying which, within seconds."""
    sensors = sensors_of_bundle(edge_data.model)
    csv = tmp_path / "asset-1.csv"
    pd.read_csv(edge_data.csv).iloc[:60].to_csv(csv, index=False)
    offline = score_offline(edge_data.model, csv)
    pki = make_certificates(tmp_path / "pki")
    broker = broker_factory()
    watcher = clients(broker, "watcher", subscribe=("out/#",))
    port = free_port()
    server = OpcuaServer(port, {"asset-1": csv}, secure=pki).start(0, 60)
    good = {
        "security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
        "certificate_file": str(pki / "gateway.der"), "private_key_file": str(pki / "gateway.pem"),
        "server_certificate_file": str(pki / "server.der"),
    }  # fmt: skip

    def daemon(name: str, security: dict[str, str]) -> EdgeProcess:
        proc = EdgeProcess(
            tmp_path / name, bootstrap="127.0.0.1:9", input_topic="-", output_topic="-",
            dead_letter_topic="-", group="-", model=edge_data.model, batch_size=20,
            config={
                "source": {"kind": "opcua", "outputs": ["mqtt"], "startup_timeout_seconds": 40},
                "opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}/memae-ts/", "sampling_interval_ms": 20,
                          "tick_seconds": 60, "tick_wait_seconds": 2.0, "queue_size": 100,
                          "timeout_seconds": 5, **security},
                "mqtt": {"port": broker.port, "client_id": f"gw-{name}", "score_topic": "out/scores/{asset}"},
            },
        )  # fmt: skip
        with open(proc.config, "a") as fh:
            fh.write('[opcua.nodes."asset-1"]\n')
            fh.writelines(f'"ns=2;s=asset-1.{s}" = "{s}"\n' for s in sensors)
        return proc

    refused = {
        "intruder": (
            {
                **good,
                "certificate_file": str(pki / "intruder.der"),
                "private_key_file": str(pki / "intruder.pem"),
            },
            "refused us: BadCertificateUntrusted (its trust list must hold opcua.certificate_file)",
        ),
        "fake-pin": (
            {**good, "server_certificate_file": str(pki / "fake-server.der")},
            "not the trusted one in opcua.server_certificate_file",
        ),
        "wrong-key": ({**good, "private_key_file": str(pki / "intruder.pem")}, "is not the key of"),
        "no-security": (
            {},
            "offers no endpoint with security None (no security) (it offers Basic256Sha256/Sign",
        ),
    }
    try:
        for name, (security, words) in refused.items():
            proc = daemon(name, security)
            t0 = time.monotonic()
            proc.start(wait_ready=False)
            assert proc.proc is not None
            assert proc.proc.wait(60) == 2, (name, proc.logs()[-3000:])
            assert time.monotonic() - t0 < 40, name
            errors = [e for e in proc.log_events() if e["msg"] == "source or sink cannot start; exiting"]
            assert len(errors) == 1 and words in errors[0]["error"], (name, proc.logs()[-3000:])
            assert "\n" not in errors[0]["error"]

        proc = daemon("gateway", good)
        proc.start(timeout=60)
        server.wait_written()
        got = watcher.wait("out/scores/asset-1", len(offline), timeout=60)
        assert_matches_offline(records(got), offline, "asset-1")
        assert len(got) == len(offline)
        assert "trusted without a check" not in proc.logs()
        assert proc.stop() == 0
    finally:
        server.kill()
