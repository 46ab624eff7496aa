"""The memory-collapse check that `fit` runs on held-out windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memae_ts.cli import main
from memae_ts.training.memory_usage import collapse_warning, memory_usage


def test_usage_counts_slots_and_active_weights() -> None:
    weights = np.zeros((2, 3, 5))  # (batch, latent positions, slots)
    weights[0, :, 1] = 1.0
    weights[1, 0, [2, 4]] = 0.5
    weights[1, 1:, 2] = 1.0
    usage = memory_usage(weights)
    assert usage == {"slots": 5, "slots_used": 3, "mean_active_per_read": 7 / 6}
    assert collapse_warning(usage) is None


def test_collapse_onto_one_slot_is_reported() -> None:
    weights = np.zeros((10, 50))
    weights[:, 7] = 1.0
    usage = memory_usage(weights)
    assert usage["slots_used"] == 1
    message = collapse_warning(usage)
    assert message is not None and "--temperature" in message and "50 slots" in message


def test_fit_records_usage_and_info_shows_it(tiny_model_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    usage = json.loads((tiny_model_dir / "config.json").read_text())["training"]["memory_usage"]
    assert 1 < usage["slots_used"] <= usage["slots"] == 20
    assert usage["mean_active_per_read"] >= 1
    assert main(["info", str(tiny_model_dir)]) == 0
    assert f"{usage['slots_used']} of 20 slots addressed" in capsys.readouterr().out
