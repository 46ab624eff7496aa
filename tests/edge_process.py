"""Run ``memae-ts edge`` as a real subprocess (so SIGTERM/SIGKILL/SIGHUP are real) and read
Kafka topics back. Used by the edge tests and bench/stream.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka_service import REPO, free_port


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, committed_only: bool = False
) -> list[Record]:
    """Every record of ``topic`` from the beginning, once ``expected`` are there (or timeout).
    ``committed_only``: as a ``read_committed`` consumer (records of aborted or still open
    transactions are not returned)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    try:
        deadline = time.monotonic() + timeout
        parts: set[int] | None = None
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or None  # unknown topic: None or empty
            if parts is None:
                time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Record] = []

        def poll_once() -> None:
            # poll, not iteration: an iterator only stops after a quiet spell, which never
            # comes while a replay is still producing.
            for batch in consumer.poll(timeout_ms=200).values():
                for m in batch:
                    out.append(Record(m.key, m.value, dict(m.headers or []), m.partition, m.offset))

        while time.monotonic() < deadline and len(out) < expected:
            poll_once()
        if len(out) >= expected:
            poll_once()  # catch extras (duplicates) that are already there
        return out
    finally:
        consumer.close()


class EdgeProcess:
    """One ``memae-ts edge`` daemon with its own config file, port and log."""

    def __init__(
        self,
        workdir: Path,
        *,
        bootstrap: str,
        input_topic: str,
        output_topic: str,
        dead_letter_topic: str,
        group: str,
        model: Path,
        batch_size: int = 200,
        client_id: str = "edge-test",
        extra_env: dict[str, str] | None = None,
        config: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """``config``: more keys per section (``{"kafka": {"group_instance_id": "a"}}``),
        overriding the ones written here."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.workdir / "edge.toml"
        sections: dict[str, dict[str, Any]] = {
            "kafka": {
                "brokers": [bootstrap],
                "input_topic": input_topic,
                "output_topic": output_topic,
                "dead_letter_topic": dead_letter_topic,
                "group_id": group,
                "client_id": client_id,
                "session_timeout_ms": 6000,
            },
            "model": {"path": str(model)},
            "processing": {"batch_size": batch_size, "poll_timeout_ms": 100},
            "http": {"host": "127.0.0.1", "port": self.port},
        }
        for name, values in (config or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                for name, values in sections.items()
            )
        )
        self.env = {**os.environ, **(extra_env or {})}
        self.log = self.workdir / "edge.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> EdgeProcess:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memae_ts.cli", "edge", "--config", str(self.config)],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge daemon exited {self.proc.returncode}:\n{self.logs()}")
            try:
                code, body = self.get("/readyz")
                if code == 200:
                    return
                last = body.decode(errors="replace")
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"edge daemon not ready in {timeout}s ({last}):\n{self.logs()}")

    def metrics(self) -> str:
        return self.get("/metrics")[1].decode()

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code. A daemon that does not stop in ``timeout``
        is asked for its threads' stacks (SIGUSR1) before it is killed, and the failure shows
        them with the log's end: what it was waiting for."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(2.0)
            self.proc.kill()
            self.proc.wait(5)
            tail = "\n".join(self.logs().splitlines()[-80:])
            raise AssertionError(
                f"edge daemon did not stop in {timeout}s after SIGTERM; its threads and log:\n{tail}"
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_event(self, msg: str, where: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        """The first log event ``msg`` (for which ``where(event)`` holds), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.log_events():
                if event.get("msg") == msg and (where is None or where(event)):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log event {msg!r} in {timeout}s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events
