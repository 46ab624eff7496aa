"""The MemAE network in PyTorch: memory module, 1D-conv and MLP autoencoders.

Imported only by the training path; scoring engines rebuild the same computation from the
bundle's graph (docs/bundle-format.md), so this module also writes that graph.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("conv", "mlp")
ACTIVATIONS = ("relu", "leaky_relu", "tanh")
ADDRESSINGS = ("cosine", "dot")
COSINE_TEMPERATURE = 0.05  # the default T for cosine addressing (see NetworkSpec)
DOT_TEMPERATURE = 1.0  # dot addressing as in the authors' code: softmax of the raw dot products
LEAKY_SLOPE = 0.01
SHRINK_EPSILON = 1e-12
NORM_EPSILON = 1e-12


@dataclass
class NetworkSpec:
    """Everything needed to rebuild the network; stored in the bundle's `training` section.

    Temperature: softmax over raw cosine similarities in [-1, 1] is nearly flat when the memory
    has hundreds of slots (with N = 2000 no weight can exceed ~0.0037), so hard shrinkage with
    λ in [1/N, 3/N] either keeps half the slots or none. Dividing the cosine by a temperature
    T (default 0.05, logits in [-20, 20]) lets one or a few slots dominate, and the default
    λ = 1/N then removes the long tail: addressing becomes genuinely sparse. `dot` addressing
    (the authors' code) needs no temperature and uses T = 1 unless set.
    """

    arch: str = "conv"
    n_sensors: int = 1
    window: int = 32
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    latent: int = 32
    kernel_size: int = 5
    activation: str = "leaky_relu"
    use_memory: bool = True
    memory_slots: int = 200
    addressing: str = "cosine"
    temperature: float | None = None  # None: 0.05 for cosine, 1 for dot addressing
    learn_temperature: bool = False
    shrink_threshold: float | None = None  # None: 1/N; 0 turns sparsity off

    def resolved_temperature(self) -> float:
        if self.temperature is None:
            return DOT_TEMPERATURE if self.addressing == "dot" else COSINE_TEMPERATURE
        return float(self.temperature)

    def resolved_shrink_threshold(self) -> float:
        if self.shrink_threshold is None:
            return 1.0 / self.memory_slots
        return float(self.shrink_threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_spec(spec: NetworkSpec) -> None:
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {spec.arch!r}")
    if spec.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {spec.activation!r}")
    if spec.addressing not in ADDRESSINGS:
        raise ValueError(f"addressing must be one of {ADDRESSINGS}, got {spec.addressing!r}")
    if spec.memory_slots < 1 or spec.latent < 1 or spec.window < 1 or spec.n_sensors < 1:
        raise ValueError("memory_slots, latent, window and n_sensors must be positive")
    if not spec.resolved_temperature() > 0:
        raise ValueError(f"temperature must be positive, got {spec.temperature}")
    if spec.kernel_size < 1 or spec.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {spec.kernel_size}")
    if not 0 <= spec.resolved_shrink_threshold() < 1:
        raise ValueError("shrink_threshold must be in [0, 1)")


def hard_shrink_relu(weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """Continuous hard shrinkage (paper eq. 7): differentiable, and exactly 0 below λ."""
    shifted = weights - threshold
    return F.relu(shifted) * weights / (shifted.abs() + SHRINK_EPSILON)


class MemoryUnit(nn.Module):
    """N×C memory addressed by attention; returns the read ẑ = ŵM and the weights ŵ."""

    def __init__(
        self,
        slots: int,
        dim: int,
        *,
        addressing: str = "cosine",
        temperature: float = 0.05,
        learn_temperature: bool = False,
        shrink_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.slots = slots
        self.dim = dim
        self.addressing = addressing
        self.shrink_threshold = shrink_threshold
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(slots, dim).uniform_(-bound, bound))
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.exp())

    def similarity(self, z: torch.Tensor) -> torch.Tensor:
        if self.addressing == "cosine":
            return (
                F.normalize(z, dim=-1, eps=NORM_EPSILON)
                @ F.normalize(self.weight, dim=-1, eps=NORM_EPSILON).t()
            )
        return z @ self.weight.t()

    def address(self, z: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.similarity(z) / self.log_temperature.exp(), dim=-1)
        if self.shrink_threshold > 0:
            weights = hard_shrink_relu(weights, self.shrink_threshold)
            # L1 renormalisation; an all-zero row stays zero (never 0/0 = NaN).
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(NORM_EPSILON)
        return weights

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.address(z)
        return weights @ self.weight, weights

    def export(self) -> dict[str, Any]:
        return {
            "weight": "memory.weight",
            "slots": self.slots,
            "dim": self.dim,
            "addressing": self.addressing,
            "temperature": self.temperature,
            "shrink_threshold": self.shrink_threshold,
            "epsilon": SHRINK_EPSILON,
        }


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the addressing weights: the paper's sparsity regulariser."""
    return (-weights * torch.log(weights + 1e-12)).sum(dim=-1).mean()


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    return nn.Tanh()


def _export_layers(sequential: nn.Sequential, prefix: str) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = []
    for index, module in enumerate(sequential):
        name = f"{prefix}.{index}"
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            transposed = isinstance(module, nn.ConvTranspose1d)
            layer = {
                "op": "conv_transpose1d" if transposed else "conv1d",
                "weight": f"{name}.weight",
                "bias": f"{name}.bias",
                "stride": module.stride[0],
                "padding": module.padding[0],  # type: ignore[index]
            }
            if transposed:
                layer["output_padding"] = module.output_padding[0]
            layers.append(layer)
        elif isinstance(module, nn.Linear):
            layers.append({"op": "linear", "weight": f"{name}.weight", "bias": f"{name}.bias"})
        elif isinstance(module, nn.ReLU):
            layers.append({"op": "relu"})
        elif isinstance(module, nn.LeakyReLU):
            layers.append({"op": "leaky_relu", "negative_slope": module.negative_slope})
        elif isinstance(module, nn.Tanh):
            layers.append({"op": "tanh"})
        else:  # pragma: no cover - guarded by construction
            raise TypeError(f"cannot export layer {module!r}")
    return layers


class MemAENet(nn.Module):
    """Encoder → (memory) → decoder on windows shaped (batch, window, sensors)."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        validate_spec(spec)
        self.spec = spec
        self.encoder, self.decoder = (
            self._conv_layers(spec) if spec.arch == "conv" else self._mlp_layers(spec)
        )
        self.memory: MemoryUnit | None = None
        if spec.use_memory:
            self.memory = MemoryUnit(
                spec.memory_slots,
                spec.latent,
                addressing=spec.addressing,
                temperature=spec.resolved_temperature(),
                learn_temperature=spec.learn_temperature,
                shrink_threshold=spec.resolved_shrink_threshold(),
            )

    @staticmethod
    def _conv_layers(spec: NetworkSpec) -> tuple[nn.Sequential, nn.Sequential]:
        # Stride-2 convolutions halve the length (rounding up); transposed convolutions with a
        # computed output_padding restore the exact length, so any window size works.
        k, pad = spec.kernel_size, spec.kernel_size // 2
        lengths = [spec.window]
        encoder: list[nn.Module] = []
        in_ch = spec.n_sensors
        for out_ch in spec.channels:
            encoder += [nn.Conv1d(in_ch, out_ch, k, stride=2, padding=pad), _activation(spec.activation)]
            lengths.append((lengths[-1] + 2 * pad - k) // 2 + 1)
            in_ch = out_ch
        encoder.append(nn.Conv1d(in_ch, spec.latent, 3, stride=1, padding=1))
        decoder: list[nn.Module] = []
        in_ch = spec.latent
        for level in range(len(spec.channels), 0, -1):
            out_ch = spec.channels[level - 1]
            produced = (lengths[level] - 1) * 2 - 2 * pad + k
            output_padding = lengths[level - 1] - produced
            if output_padding not in (0, 1):  # pragma: no cover - arithmetic guard
                raise ValueError(f"window {spec.window} cannot be reconstructed exactly")
            decoder += [
                nn.ConvTranspose1d(in_ch, out_ch, k, stride=2, padding=pad, output_padding=output_padding),
                _activation(spec.activation),
            ]
            in_ch = out_ch
        decoder.append(nn.Conv1d(in_ch, spec.n_sensors, 3, stride=1, padding=1))
        return nn.Sequential(*encoder), nn.Sequential(*decoder)

    @staticmethod
    def _mlp_layers(spec: NetworkSpec) -> tuple[nn.Sequential, nn.Sequential]:
        sizes = [spec.window * spec.n_sensors, *spec.hidden]
        encoder: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            encoder += [nn.Linear(a, b), _activation(spec.activation)]
        encoder.append(nn.Linear(sizes[-1], spec.latent))
        decoder: list[nn.Module] = []
        back = [spec.latent, *reversed(spec.hidden)]
        for a, b in itertools.pairwise(back):
            decoder += [nn.Linear(a, b), _activation(spec.activation)]
        decoder.append(nn.Linear(back[-1], spec.window * spec.n_sensors))
        return nn.Sequential(*encoder), nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the reconstruction (same shape as x) and the addressing weights (or None)."""
        batch = x.shape[0]
        if self.spec.arch == "conv":
            z = self.encoder(x.transpose(1, 2))  # (B, C, L)
            weights = None
            if self.memory is not None:
                z_hat, weights = self.memory(z.transpose(1, 2))
                z = z_hat.transpose(1, 2)
            return self.decoder(z).transpose(1, 2), weights
        z = self.encoder(x.reshape(batch, -1))
        weights = None
        if self.memory is not None:
            z, weights = self.memory(z)
        return self.decoder(z).reshape(x.shape), weights

    def export_graph(self) -> dict[str, Any]:
        """The runtime-neutral description in docs/bundle-format.md."""
        return {
            "kind": self.spec.arch,
            "window": self.spec.window,
            "n_sensors": self.spec.n_sensors,
            "encoder": _export_layers(self.encoder, "encoder"),
            "memory": None if self.memory is None else self.memory.export(),
            "decoder": _export_layers(self.decoder, "decoder"),
        }

    def export_tensors(self) -> dict[str, Any]:
        """float32 numpy arrays keyed like the state dict (the names the graph refers to)."""
        return {
            name: tensor.detach().cpu().to(torch.float32).contiguous().numpy()
            for name, tensor in self.state_dict().items()
            if tensor.ndim > 0
        }
