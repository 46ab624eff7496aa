"""`memae-ts edge --check` validates config and model without touching Kafka."""

from __future__ import annotations

import os
import subprocess
import sys

from kafka_service import REPO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memae_ts.cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=60, env=env,
    )  # fmt: skip


def test_check_loads_the_model_named_by_the_environment(tmp_path, edge_data):
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[model]\npath = "/nonexistent"\n')
    env = {**os.environ, "MEMAE_TS_MODEL_PATH": str(edge_data.model)}
    out = run("edge", "--config", str(cfg), "--check", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: model ")
    assert "8 sensors" in out.stdout


def test_check_fails_on_a_missing_model(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[model]\npath = "{tmp_path / "missing"}"\n')
    out = run("edge", "--config", str(cfg), "--check")
    assert out.returncode != 0
    assert "missing" in out.stderr
