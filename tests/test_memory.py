"""The memory module: shapes, sparsity, the flat-softmax trap, the all-zero case, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from memae_ts.engines.bundle import make_bundle  # noqa: E402
from memae_ts.engines.engine_numpy import NumpyEngine, memory_read  # noqa: E402
from memae_ts.engines.engine_torch import TorchEngine  # noqa: E402
from memae_ts.training.model import MemAENet, MemoryUnit, NetworkSpec, attention_entropy  # noqa: E402


def test_read_shapes_and_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    memory = MemoryUnit(50, 8, temperature=0.05, shrink_threshold=1 / 50)
    z = torch.randn(6, 8)
    z_hat, weights = memory(z)
    assert z_hat.shape == (6, 8)
    assert weights.shape == (6, 50)
    np.testing.assert_allclose(weights.sum(dim=1).detach().numpy(), 1.0, atol=1e-6)
    assert torch.allclose(z_hat, weights @ memory.weight)


def test_default_temperature_makes_shrinkage_sparse() -> None:
    torch.manual_seed(1)
    memory = MemoryUnit(500, 16, temperature=0.05, shrink_threshold=1 / 500)
    _, weights = memory(torch.randn(64, 16))
    nonzero = (weights > 0).sum(dim=1).float()
    # Even with a random (untrained) memory, a small fraction of the 500 slots survives.
    assert float(nonzero.mean()) < 0.1 * 500
    assert float(nonzero.max()) < 0.25 * 500
    assert float(nonzero.min()) >= 1


def test_flat_softmax_trap_at_unit_temperature() -> None:
    """Raw cosine in [-1, 1] with N = 2000: no weight exceeds e²/(e² + 1999) ≈ 0.0037."""
    torch.manual_seed(2)
    memory = MemoryUnit(2000, 16, temperature=1.0, shrink_threshold=0.0)
    with torch.no_grad():
        _, weights = memory(torch.randn(32, 16))
    bound = math.exp(2) / (math.exp(2) + 1999)
    assert float(weights.max()) <= bound + 1e-6
    # ...so λ = 1/N keeps roughly half of the slots: shrinkage does not sparsify.
    shrunk = MemoryUnit(2000, 16, temperature=1.0, shrink_threshold=1 / 2000)
    shrunk.load_state_dict(memory.state_dict())
    with torch.no_grad():
        _, w2 = shrunk(torch.randn(32, 16))
    assert float((w2 > 0).float().mean()) > 0.2


def test_all_weights_shrunk_to_zero_is_finite() -> None:
    torch.manual_seed(3)
    memory = MemoryUnit(100, 8, temperature=1.0, shrink_threshold=0.5)  # every weight < 0.5
    z = torch.randn(5, 8, requires_grad=True)
    z_hat, weights = memory(z)
    assert torch.all(weights == 0)
    assert torch.all(z_hat == 0)
    loss = z_hat.sum() + attention_entropy(weights)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(torch.isfinite(z.grad))
    assert torch.all(torch.isfinite(memory.weight.grad))
    # The numpy reference agrees: zero read, no NaN.
    spec = memory.export()
    read, w = memory_read(z.detach().double().numpy(), memory.weight.detach().double().numpy(), spec)
    assert np.all(w == 0) and np.all(read == 0)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_gradients_reach_encoder_and_memory(arch: str) -> None:
    torch.manual_seed(4)
    net = MemAENet(
        NetworkSpec(
            arch=arch, n_sensors=3, window=12, channels=[4, 8], hidden=[16], latent=6, memory_slots=10
        )
    )
    x = torch.randn(8, 12, 3)
    recon, weights = net(x)
    assert recon.shape == x.shape
    loss = torch.mean((recon - x) ** 2) + 2e-4 * attention_entropy(weights)
    loss.backward()
    assert float(net.encoder[0].weight.grad.abs().sum()) > 0
    assert float(net.memory.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("window", [1, 5, 7, 16, 33])
def test_conv_reconstructs_any_window_length(window: int) -> None:
    net = MemAENet(
        NetworkSpec(arch="conv", n_sensors=2, window=window, channels=[4, 4], latent=4, memory_slots=5)
    )
    recon, _ = net(torch.randn(3, window, 2))
    assert recon.shape == (3, window, 2)


def _random_bundle(arch: str, addressing: str, use_memory: bool = True, shrink: float | None = None):
    torch.manual_seed(5)
    spec = NetworkSpec(
        arch=arch,
        n_sensors=3,
        window=10,
        channels=[4, 6],
        hidden=[12, 8],
        latent=5,
        memory_slots=16,
        addressing=addressing,
        use_memory=use_memory,
        temperature=0.1 if addressing == "cosine" else 1.0,
        shrink_threshold=shrink,
        activation="tanh" if arch == "mlp" else "leaky_relu",
    )
    net = MemAENet(spec).eval()
    config = {
        "sensors": ["a", "b", "c"],
        "window": 10,
        "stride": 1,
        "time_column": None,
        "asset_column": None,
        "max_gap_seconds": None,
        "max_fill_rows": 3,
        "scaler": {"kind": "standard", "center": [1.0, -2.0, 0.5], "scale": [2.0, 0.5, 1.0]},
        "threshold": {"method": "quantile", "value": 0.7},
        "network": net.export_graph(),
        "training": {"network_spec": spec.to_dict()},
    }
    return make_bundle(config, net.export_tensors()), net


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("addressing", ["cosine", "dot"])
@pytest.mark.parametrize("use_memory", [True, False])
def test_numpy_reference_matches_torch(arch: str, addressing: str, use_memory: bool) -> None:
    bundle, net = _random_bundle(arch, addressing, use_memory)
    windows = np.random.default_rng(0).normal(size=(7, 10, 3)).astype(np.float32)
    ref_scores, ref_contrib = NumpyEngine(bundle).score(windows)
    torch_scores, torch_contrib = TorchEngine(bundle, net).score(windows)
    np.testing.assert_allclose(torch_scores, ref_scores, rtol=1e-4)
    np.testing.assert_allclose(torch_contrib, ref_contrib, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ref_contrib.mean(axis=1), ref_scores)
    # An engine rebuilt from the bundle alone (no live network) gives the same numbers.
    rebuilt, _ = TorchEngine(bundle).score(windows)
    np.testing.assert_array_equal(rebuilt, torch_scores)
