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


def test_the_edge_stack_runs_without_torch(edge_data):
    """A gateway installs no torch: block it, then load the served model and take readings
    through parsing, windowing, scoring and score records in a fresh interpreter."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "import edge.daemon, edge.cli, connectors.kafka_sink, connectors.kafka_source\n"
        "from connectors.buffers import WindowBuffers\n"
        "from connectors.messages import ReadingParser, encode_reading_compact, encode_scores\n"
        "from edge.model import load_served_model\n"
        f"model = load_served_model({str(edge_data.model)!r})\n"
        "parser = ReadingParser(model.sensors)\n"
        "values = [encode_reading_compact(1.8e9 + 60 * i, [1.0] * len(model.sensors))\n"
        "          for i in range(model.window + 4)]\n"
        "batch = parser.parse_batch([b'pump-1'] * len(values), values)\n"
        "buffers = WindowBuffers(model.window, len(model.sensors))\n"
        "made = buffers.extend('pump-1', 0, batch.ts, batch.values, np.arange(len(values)))\n"
        "scores, contributions = model.engine.score(made.windows)\n"
        "records = encode_scores(['pump-1'] * len(scores), batch.ts[made.ends], scores,\n"
        "                        model.threshold, contributions, model.sensors, model.version)\n"
        "assert len(records) == 5 and np.isfinite(scores).all()\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
