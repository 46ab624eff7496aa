"""`addressing="dot"` uses temperature 1 unless one is given (as the README and the network spec
say, and as the authors' code does); cosine keeps 0.05. It silently kept 0.05 before."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from fixtures_core import TINY_PARAMS

from memae_ts.training.memory_usage import collapse_warning
from memae_ts.training.model import NetworkSpec


def test_spec_resolves_the_temperature_per_addressing() -> None:
    assert NetworkSpec(addressing="cosine").resolved_temperature() == 0.05
    assert NetworkSpec(addressing="dot").resolved_temperature() == 1.0
    assert NetworkSpec(addressing="dot", temperature=0.3).resolved_temperature() == 0.3
    assert NetworkSpec(addressing="cosine", temperature=2.0).resolved_temperature() == 2.0


@pytest.mark.parametrize(
    ("addressing", "given", "stored"), [("dot", None, 1.0), ("cosine", None, 0.05), ("dot", 0.3, 0.3)]
)
def test_fitted_bundle_stores_the_temperature_it_trained_with(
    plant_csvs: tuple[Path, Path], addressing: str, given: float | None, stored: float
) -> None:
    from memae_ts.estimator import MemAE

    params = {**TINY_PARAMS, "epochs": 1, "addressing": addressing}
    if given is not None:
        params["temperature"] = given
    model = MemAE(**params).fit(plant_csvs[0])
    memory = model.bundle_.config["network"]["memory"]
    assert memory["addressing"] == addressing
    assert memory["temperature"] == pytest.approx(stored, rel=1e-6)


def test_collapse_advice_names_what_dot_addressing_does() -> None:
    message = collapse_warning({"slots": 50, "slots_used": 1, "mean_active_per_read": 1.0})
    assert message is not None
    assert "--temperature" in message and "--addressing dot, which uses temperature 1" in message
