"""Scoring with the PyTorch network rebuilt from a bundle (the training-side engine)."""

from __future__ import annotations

import numpy as np
import torch

from memae_ts.engines.bundle import Bundle
from memae_ts.engines.engine_numpy import check_windows
from memae_ts.training.model import MemAENet, NetworkSpec


def network_from_bundle(bundle: Bundle) -> MemAENet:
    spec_dict = dict(bundle.config["training"]["network_spec"])
    memory = bundle.network.get("memory")
    if memory is not None:
        spec_dict["temperature"] = float(memory["temperature"])
        spec_dict["learn_temperature"] = False
        spec_dict["shrink_threshold"] = float(memory["shrink_threshold"])
    net = MemAENet(NetworkSpec(**spec_dict))
    state = {name: torch.from_numpy(array.copy()) for name, array in bundle.weights.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith("log_temperature")]
    if missing or unexpected:
        from memae_ts.errors import BundleError

        raise BundleError(
            f"{bundle.path}: weights do not match the network (missing {missing}, unexpected {unexpected})"
        )
    net.eval()
    return net


class TorchEngine:
    name = "torch"

    def __init__(self, bundle: Bundle, network: MemAENet | None = None) -> None:
        self.bundle = bundle
        self.network = network if network is not None else network_from_bundle(bundle)
        scaler = bundle.scaler
        self._center = scaler.center
        self._scale = scaler.scale
        self._reduction = bundle.scoring

    def _forward(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        scaled = ((windows.astype(np.float64) - self._center) / self._scale).astype(np.float32)
        with torch.inference_mode():
            recon, weights = self.network(torch.from_numpy(scaled))
        return scaled, recon.numpy(), weights

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        return self._forward(windows)[1]

    def attention(self, windows: np.ndarray) -> np.ndarray | None:
        weights = self._forward(windows)[2]
        return None if weights is None else weights.numpy()

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window scores (B,) and per-sensor contributions (B, S), reduced as the bundle's
        "scoring" says (memae_ts.detection.score_reduction)."""
        scaled, recon, _ = self._forward(windows)
        return self._reduction.reduce((scaled.astype(np.float64) - recon) ** 2)

    def analyse(self, windows: np.ndarray, encodings: bool = False) -> tuple[np.ndarray | None, ...]:
        """Scores, contributions, addressing (B, L, slots), novelty (B, L) and, when asked, the
        encodings (B, L, C), as the numpy engine's `analyse`."""
        windows = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        scaled = ((windows.astype(np.float64) - self._center) / self._scale).astype(np.float32)
        net = self.network
        if net.memory is None:
            raise ValueError("this model has no memory module")
        with torch.inference_mode():
            x = torch.from_numpy(scaled)
            conv = net.spec.arch == "conv"
            z = net.encoder(x.transpose(1, 2)).transpose(1, 2) if conv else net.encoder(x.reshape(len(x), -1))
            z_hat, weights = net.memory(z)
            h = net.decoder(z_hat.transpose(1, 2)).transpose(1, 2) if conv else net.decoder(z_hat)
            recon = h.reshape(x.shape)
            if not conv:
                z, z_hat, weights = z[:, None, :], z_hat[:, None, :], weights[:, None, :]
            cosine = torch.nn.functional.cosine_similarity(z.double(), z_hat.double(), dim=-1, eps=1e-12)
            novelty = 1.0 - cosine
        scores, contributions = self._reduction.reduce((scaled.astype(np.float64) - recon.numpy()) ** 2)
        return (
            scores,
            contributions,
            weights.numpy(),
            novelty.numpy(),
            z.numpy() if encodings else None,
        )

    def memory(self) -> np.ndarray:
        """The memory matrix in use (slots, C)."""
        if self.network.memory is None:
            raise ValueError("this model has no memory module")
        return self.network.memory.weight.detach().numpy().copy()

    def set_memory(self, memory: np.ndarray) -> None:
        """Score with another memory matrix from now on. The parameter's storage is replaced,
        not written into: the bundle's weights may share the trained storage."""
        unit = self.network.memory
        if unit is None:
            raise ValueError("this model has no memory module")
        memory = np.asarray(memory, dtype=np.float32)
        if memory.shape != tuple(unit.weight.shape) or not np.all(np.isfinite(memory)):
            shape = tuple(unit.weight.shape)
            raise ValueError(f"memory must be finite with shape {shape}, got {memory.shape}")
        unit.weight.data = torch.from_numpy(memory.copy())
