"""The training loop: Adam, reconstruction MSE + α·entropy, early stopping on held-out windows."""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from memae_ts.model import MemAENet, attention_entropy

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    entropy_weight: float = 2e-4
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.train_loss),
            "best_epoch": self.best_epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "device": self.device,
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def training_threads() -> int:
    """Intra-op threads: MEMAE_TS_THREADS if set, else one per core.

    Why the override: the networks are small, so on a machine shared with other jobs a thread per
    core spends its time spin-waiting; measured on a loaded 2-core box, one thread trained a
    conv MemAE step in ~0.1 s where two threads took ~1.1 s.
    """
    configured = os.environ.get("MEMAE_TS_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, os.cpu_count() or 1)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True, leave=True)


@torch.no_grad()
def _mean_reconstruction_error(net: MemAENet, windows: torch.Tensor, batch: int) -> float:
    net.eval()
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch):
        x = windows[start : start + batch]
        recon, _ = net(x)
        total += float(((recon - x) ** 2).mean(dim=(1, 2)).sum())
        count += x.shape[0]
    return total / max(count, 1)


def train(
    net: MemAENet, train_windows: np.ndarray, val_windows: np.ndarray, settings: TrainSettings
) -> TrainHistory:
    """Trains in place and restores the weights of the best validation epoch."""
    torch.set_num_threads(training_threads())
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    net.to(device)
    x_train = torch.from_numpy(np.ascontiguousarray(train_windows, dtype=np.float32)).to(device)
    x_val = torch.from_numpy(np.ascontiguousarray(val_windows, dtype=np.float32)).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    history = TrainHistory(device=str(device))
    best_state: dict[str, torch.Tensor] | None = None
    best_val = float("inf")
    stale = 0
    bar = _progress(settings.epochs, settings.progress)
    try:
        for epoch in range(settings.epochs):
            net.train()
            order = torch.randperm(x_train.shape[0], generator=generator).to(device)
            epoch_loss, batches = 0.0, 0
            for start in range(0, x_train.shape[0], settings.batch_size):
                x = x_train[order[start : start + settings.batch_size]]
                recon, weights = net(x)
                loss = torch.mean((recon - x) ** 2)
                if weights is not None and settings.entropy_weight > 0:
                    loss = loss + settings.entropy_weight * attention_entropy(weights)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                epoch_loss += float(loss.detach())
                batches += 1
            train_loss = epoch_loss / max(batches, 1)
            val_loss = _mean_reconstruction_error(net, x_val, 1024) if x_val.shape[0] else train_loss
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            if val_loss < best_val - 1e-7:
                best_val, stale = val_loss, 0
                history.best_epoch = epoch + 1
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}", best=history.best_epoch)
                bar.update(1)
            log.debug("epoch %d loss %.6f val %.6f", epoch + 1, train_loss, val_loss)
            if stale >= settings.patience:
                break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.to("cpu").eval()
    return history
