"""The real Prometheus server and promtool (Debian package unpacked by
``scripts/tools.d/prometheus.sh`` into ``$MEMAE_TS_TOOLS/prometheus``) for tests.

Plain class (no pytest) so benchmarks and ad-hoc scripts can use it too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kafka_service import free_port, port_open, tools_dir


def prometheus_bin() -> Path:
    return tools_dir() / "prometheus" / "usr" / "bin"


def promtool() -> Path:
    return prometheus_bin() / "promtool"


def missing_reason() -> str | None:
    for name in ("prometheus", "promtool"):
        if not (prometheus_bin() / name).exists():
            return f"{name} missing in {prometheus_bin()}; run `make tools`"
    return None


class PrometheusServer:
    """A Prometheus on a free 127.0.0.1 port scraping the given targets every second.

    Targets can be changed while it runs (``set_targets``): they live in a file_sd file
    that Prometheus re-reads, so one server serves the whole test session.
    """

    def __init__(self, workdir: Path, scrape_interval: str = "1s") -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.scrape_interval = scrape_interval
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, targets: list[str], labels: dict[str, str] | None = None) -> None:
        sd = [{"targets": targets, "labels": labels or {}}]
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(sd))
        tmp.replace(self.workdir / "targets.json")

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "targets.json").exists():
            self.set_targets([])
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: memae-ts-edge\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self.workdir / 'targets.json'}']\n"
            "        refresh_interval: 1s\n"
        )
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(prometheus_bin() / "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited; see {self.workdir}/prometheus.log")
            if port_open(self.port):
                try:
                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` vector of the HTTP API."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        return list(body["data"]["result"])

    def wait_for(self, promql: str, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``predicate(result)`` holds; returns the last result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{promql!r} never satisfied the condition; last result {result}")
