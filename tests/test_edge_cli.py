"""`memae-ts edge --check` validates config and model without touching Kafka."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from kafka_service import REPO
from memae_ts.edge.config import ConfigError, EdgeConfig


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
        "import memae_ts.edge.daemon, memae_ts.edge.cli\n"
        "import memae_ts.connectors.kafka_sink, memae_ts.connectors.kafka_source\n"
        "from memae_ts.connectors.buffers import WindowBuffers\n"
        "from memae_ts.connectors.messages import ReadingParser, encode_reading_compact, encode_scores\n"
        "from memae_ts.edge.model import load_served_model\n"
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


def test_bad_reload_and_episode_topic_settings_are_one_line_and_exit_2(tmp_path, edge_data):
    """``model.reload``, ``mqtt.episodes_topic`` and the OPC UA security settings (the gateway
    settings of #17) checked at start: a wrong value names the option in one line, exit status
    2, before any connection."""
    cfg = tmp_path / "edge.toml"
    model = f'[model]\npath = "{edge_data.model}"\n'
    cfg.write_text(model + 'reload = "sometimes"\n')
    out = run("edge", "--config", str(cfg), "--check")
    assert out.returncode == 2 and "model.reload 'sometimes': 'signal' or 'on-change'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    cfg.write_text(model + 'reload = "on-change"\nreload_check_seconds = 2\n')
    assert run("edge", "--config", str(cfg), "--check").returncode == 0

    opcua = '[source]\nkind = "opcua"\noutputs = ["mqtt"]\n[opcua.nodes."p"]\n"ns=2;s=a" = "a"\n[opcua]\n'
    secure = 'security_policy = "Basic256Sha256"\n'
    cases = {
        'reload = "on-change"\nreload_check_seconds = 0\n': "model.reload_check_seconds must be positive",
        '[source]\nkind = "mqtt"\n[mqtt]\nepisodes_topic = "plant/+/episodes"\n': (
            "mqtt.episodes_topic 'plant/+/episodes' must not contain wildcards"
        ),
        opcua + 'security_policy = "Basic128Rsa15"\n': "opcua.security_policy 'Basic128Rsa15': one of",
        opcua + secure + 'security_mode = "Encrypt"\n': "opcua.security_mode 'Encrypt': 'Sign' or",
        opcua + secure + 'certificate_file = "/etc/hostname"\n': "opcua.private_key_file is required",
        opcua + secure + f'certificate_file = "{tmp_path}/no.der"\nprivate_key_file = "/etc/hostname"\n': (
            f"opcua.certificate_file: cannot read {tmp_path}/no.der"
        ),
        opcua + 'server_certificate_file = "/etc/hostname"\n': "server_certificate_file is set but",
        opcua + secure + 'security = "Basic256Sha256,Sign,a,b"\n': "opcua.security and opcua.security_policy",
    }
    for extra, words in cases.items():
        cfg.write_text('[model]\npath = "/m"\n' + extra)
        with pytest.raises(ConfigError, match=re.escape(words)):
            EdgeConfig.load(cfg, {})
