"""A real Mosquitto broker for the tests: Debian's package unpacked by ``make tools``
(scripts/tools.d/mosquitto.sh), started on a free loopback port with a generated config.

``restart`` keeps the port and the persistence file (sessions and queued QoS 1 messages survive
a clean restart, as on a plant broker with ``persistence true``); ``kill`` is a SIGKILL.
Optional: a TLS listener with a certificate from a private CA, and a password file.
"""

from __future__ import annotations

import getpass
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

from kafka_service import free_port, port_open, tools_dir


def mosquitto_root() -> Path:
    return tools_dir() / "mosquitto"


def mosquitto_bin() -> Path:
    return mosquitto_root() / "usr" / "sbin" / "mosquitto"


def mosquitto_env() -> dict[str, str]:
    libs = mosquitto_root() / "usr" / "lib" / f"{platform.machine()}-linux-gnu"
    return {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def missing_reason() -> str | None:
    if not mosquitto_bin().exists():
        return f"mosquitto missing in {mosquitto_root()}; run `make tools`"
    return None


class MosquittoBroker:
    def __init__(
        self,
        workdir: Path,
        *,
        tls: tuple[Path, Path, Path] | None = None,  # (CA cert, server cert, server key)
        users: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.users = users
        self.config = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"user {getpass.getuser()}",  # as root it would switch to a 'mosquitto' user
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 1000",  # MQTT 3.1.1 clients: unacked messages sent at once
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.users is not None:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(
                [str(mosquitto_root() / "usr" / "bin" / "mosquitto_passwd"), "-U", str(pwfile)],
                check=True, capture_output=True, env=mosquitto_env(),
            )  # fmt: skip
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> MosquittoBroker:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(mosquitto_bin()), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
            env=mosquitto_env(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto not listening in {timeout}s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM: mosquitto writes its persistence file (sessions, queued messages) first.

        Returns False when it had to be SIGKILLed after `timeout` (queued messages since the last
        autosave are then lost, as in a broker crash): `restart` refuses to pass that off as a
        clean restart. The timeout is long because on a loaded 2-core machine a 10 s limit was
        once reached, and the lost messages looked like a daemon bug.
        """
        clean = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        return clean

    def restart(self) -> None:
        """A clean restart (SIGTERM, persistence written) or an AssertionError saying it was not."""
        assert self.stop(), "mosquitto did not stop on SIGTERM in 60 s: killed, queued messages lost"
        self.start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None
