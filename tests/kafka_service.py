"""A real single-node Apache Kafka broker (KRaft) for tests and benchmarks.

Started from the Maven Central jars that ``scripts/tools.d/kafka.sh`` puts in
``$MEMAE_TS_TOOLS/kafka/libs``, bound to free 127.0.0.1 ports, with its data in a private
directory. Plain class (no pytest) so ``bench/stream.py`` can use it too.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tools_dir() -> Path:
    """Where ``make tools`` installed the test services (env ``MEMAE_TS_TOOLS``)."""
    return Path(os.environ.get("MEMAE_TS_TOOLS", REPO / ".tools")).resolve()


def kafka_libs() -> Path:
    return tools_dir() / "kafka" / "libs"


def missing_reason() -> str | None:
    """Why a broker cannot be started here, or None when it can."""
    if shutil.which("java") is None:
        return "java is not installed (Kafka broker needs Java 17+)"
    if not any(kafka_libs().glob("kafka_2.13-*.jar")):
        return f"Kafka jars missing in {kafka_libs()}; run `make tools`"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


_LOG4J2 = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
"""


@dataclass(frozen=True)
class SecuredListener:
    """A SASL_SSL listener with SCRAM-SHA-512 users and a certificate from a private CA.

    ``bootstrap`` names the broker as ``localhost`` (the name in its certificate), so clients
    that verify host names connect to it as production clients would.
    """

    port: int
    ca_file: Path  # the private CA's certificate: what a client trusts
    users: dict[str, str]  # SCRAM-SHA-512 user -> password

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"


def make_ca_and_server_cert(directory: Path, hosts: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
    """A private CA and a server certificate for ``hosts`` signed by it (openssl, 2 s).

    Returns (CA certificate, server PEM with its unencrypted key and certificate chain)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{h}" for h in hosts) + "\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
            "-days", "2", "-subj", "/CN=memae-ts test CA")  # fmt: skip
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={hosts[0]}",
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    pkcs8 = directory / "server.pk8"
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(key), "-out", str(pkcs8))
    server = directory / "server.pem"
    server.write_text(pkcs8.read_text() + cert.read_text() + ca_cert.read_text())
    return ca_cert, server


class KafkaBroker:
    """One KRaft node (broker + controller). ``start``/``stop``/``restart`` keep ports and data.

    With ``secured=True`` it also has a SASL_SSL listener (``self.secured``) whose users are
    created when the storage is formatted; the PLAINTEXT listener stays for the tests' own
    producers and readers.
    """

    def __init__(
        self, workdir: Path, *, partitions: int = 1, secured: bool = False, throughput: bool = False
    ) -> None:
        self.workdir = Path(workdir)
        # Tests want a broker up in seconds (C1 JIT only, a small serial-GC heap); a benchmark
        # may want one that runs like a plant's (`throughput=True`: the tiered JIT, 1 GB G1).
        self.throughput = throughput
        self.port = free_port()
        self.controller_port = free_port()
        self.partitions = partitions
        self.proc: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self.secured: SecuredListener | None = None
        self._server_pem: Path | None = None
        if secured:
            ca, self._server_pem = make_ca_and_server_cert(self.workdir / "tls")
            self.secured = SecuredListener(
                free_port(), ca, {"memae-ts-edge": "edge-" + uuid.uuid4().hex[:12]}
            )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "1000000",
        }
        if self.secured is not None:
            sp = self.secured.port
            props["listeners"] += f",SASL_SSL://127.0.0.1:{sp}"
            props["advertised.listeners"] += f",SASL_SSL://localhost:{sp}"
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
            props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
            props["listener.name.sasl_ssl.ssl.keystore.type"] = "PEM"
            props["listener.name.sasl_ssl.ssl.keystore.location"] = str(self._server_pem)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.yaml").write_text(_LOG4J2.format(log=self.workdir / "broker.log"))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        jvm = (
            ["-Xms1g", "-Xmx1g", "-XX:+UseG1GC"]
            if self.throughput
            else ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        )
        return [
            "java",
            *jvm,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
            "-cp",
            f"{kafka_libs()}/*",
            main,
            *args,
        ]

    def _format(self, config: Path) -> None:
        cluster_id = "-"
        while not cluster_id[0].isalnum():  # one starting with "-" would parse as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram: list[str] = []
        for user, password in (self.secured.users if self.secured else {}).items():
            scram += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        out = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{out.stdout}\n{out.stderr}")
        self._formatted = True

    def start(self, timeout: float = 90.0) -> None:
        """Start (formatting storage the first time) and wait until the broker serves metadata."""
        config = self._write_config()
        if not self._formatted:
            self._format(config)
        out = open(self.workdir / "stdout.log", "ab")
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Kafka broker exited early; see {self.workdir}/stdout.log")
            if port_open(self.port):
                try:
                    admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                    try:
                        admin.describe_cluster()
                    finally:
                        admin.close()
                    return
                except (KafkaError, OSError):
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"Kafka broker not ready after {timeout}s; see {self.workdir}")

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL (a power cut): no controlled shutdown; ``start`` recovers the logs."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the broker answers nothing, its connections stay open (a VM paused, a disk
        stalled); ``thaw`` resumes it where it was, with no restart and no reload."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def create_topic(self, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        finally:
            admin.close()
        # Creation returns before every listener serves the metadata; a consumer that joins
        # in between gets no partitions until its next metadata refresh.
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            deadline = time.monotonic() + 30
            while len(consumer.partitions_for_topic(name) or ()) < partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} not visible")
                time.sleep(0.1)
        finally:
            consumer.close()
        return name
