"""Scoring with the PyTorch network rebuilt from a bundle (the training-side engine)."""

from __future__ import annotations

import numpy as np
import torch

from memae_ts.bundle import Bundle
from memae_ts.engine_numpy import check_windows
from memae_ts.model import MemAENet, NetworkSpec


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
        scaled, recon, _ = self._forward(windows)
        contributions = ((scaled.astype(np.float64) - recon) ** 2).mean(axis=1)
        return contributions.mean(axis=1), contributions
