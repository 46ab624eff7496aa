"""The training loop: Adam, reconstruction MSE + α·entropy, early stopping on held-out windows.

Why batches come from a `WindowBatches` source instead of one array of all windows: a window
array holds every row `window` times (94× the data for a 1 M-row history), so a plant's year
of history could not be trained. A source cuts each batch from one scaled series (or streams it
from Parquet), and an epoch can be a bounded number of steps sampled over all windows, so the
time per epoch does not grow with the history.

Under `torchrun` (several processes, `WORLD_SIZE` > 1) the same loop runs with
DistributedDataParallel: gloo on CPU, NCCL on GPUs. Every rank takes its own share of each
epoch's windows and of the held-out windows; losses are averaged across ranks, so every rank
makes the same early-stopping decision and ends with the same weights.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from memae_ts.errors import MemaeError
from memae_ts.training.model import MemAENet, attention_entropy

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
    world_size: int = 1
    steps_per_epoch: int = 0
    seconds_per_epoch: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.train_loss),
            "best_epoch": self.best_epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "device": self.device,
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
        }


class WindowBatches(Protocol):
    """Where training batches come from: scaled float32 windows (batch, window, sensors)."""

    def steps(self) -> int:
        """Batches per epoch on this rank."""
        ...

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """This rank's batches of epoch `epoch` (0-based), in training order."""
        ...


class IndexedWindows:
    """Windows cut per batch from one scaled series: memory is the series, not every window.

    An epoch is a full pass in random order when the windows fit in `windows_per_epoch`, else
    that many windows sampled uniformly (without replacement) over all of them. With several
    ranks, every rank draws the same order and takes every `world`-th window of it.
    """

    def __init__(
        self,
        series: np.ndarray,
        ends: np.ndarray,
        window: int,
        batch_size: int,
        *,
        windows_per_epoch: int | None,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if series.dtype != np.float32:
            raise TypeError("series must be float32 (the scaled training series)")
        self.series = series
        self.ends = ends
        self.window = window
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        total = ends.size if windows_per_epoch is None else min(ends.size, windows_per_epoch)
        self.per_epoch = total
        # torch's generator, drawn once per epoch in sequence: a single process on a full pass
        # sees exactly the order earlier versions used, so results stay comparable.
        self._generator = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(-window + 1, 1, dtype=np.int64)

    def steps(self) -> int:
        return math.ceil(math.ceil(self.per_epoch / self.world) / self.batch_size)

    def _order(self) -> np.ndarray:
        order = torch.randperm(self.ends.size, generator=self._generator).numpy()
        return order[: self.per_epoch]

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        del epoch  # the generator carries the epoch: it is drawn once per epoch in order
        mine = self._order()[self.rank :: self.world]
        for start in range(0, mine.size, self.batch_size):
            ends = self.ends[mine[start : start + self.batch_size]]
            yield self.series[ends[:, None] + self._offsets[None, :]]


class ArrayWindows:
    """Batches from windows already in memory (small data sets, benchmarks)."""

    def __init__(
        self, windows: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.windows = np.ascontiguousarray(windows, dtype=np.float32)
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self._generator = torch.Generator().manual_seed(seed)

    def steps(self) -> int:
        return math.ceil(math.ceil(self.windows.shape[0] / self.world) / self.batch_size)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        del epoch
        order = torch.randperm(self.windows.shape[0], generator=self._generator).numpy()[
            self.rank :: self.world
        ]
        for start in range(0, order.size, self.batch_size):
            yield self.windows[order[start : start + self.batch_size]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def training_threads() -> int:
    """Intra-op threads: MEMAE_TS_THREADS if set, else one per core (shared among ranks).

    Why the override: the networks are small, so on a machine shared with other jobs a thread per
    core spends its time spin-waiting; measured on a loaded 2-core box, one thread trained a
    conv MemAE step in ~0.1 s where two threads took ~1.1 s.
    """
    configured = os.environ.get("MEMAE_TS_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(local, 1))


def pick_device(requested: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise MemaeError(f"--device {requested}: no CUDA GPU is available here; use --device cpu or auto")
    if requested == "cuda":
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise MemaeError(f"--device {requested!r} is not a device (auto, cpu, cuda, cuda:N)") from exc


# ---------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env(device: str = "auto") -> Distributed:
    """Join the process group when started by `torchrun` (WORLD_SIZE > 1); gloo on CPU, NCCL on
    GPUs. Safe to call more than once."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Distributed()
    dist = torch.distributed
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank=dist.get_rank(), world=dist.get_world_size())


def _all_mean(values: list[float], device: torch.device, world: int) -> list[float]:
    """Sum (numerator, denominator) pairs over ranks; returns the ratios."""
    if world <= 1:
        return [values[i] / max(values[i + 1], 1e-300) for i in range(0, len(values), 2)]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    out = tensor.cpu().tolist()
    return [out[i] / max(out[i + 1], 1e-300) for i in range(0, len(out), 2)]


# ---------------------------------------------------------------------- the loop
def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True, leave=True)


@torch.no_grad()
def _reconstruction_error_sum(
    net: torch.nn.Module, windows: np.ndarray, batch: int, device: torch.device
) -> float:
    net.eval()
    total = 0.0
    for start in range(0, windows.shape[0], batch):
        x = torch.from_numpy(windows[start : start + batch]).to(device)
        recon, _ = net(x)
        total += float(((recon - x) ** 2).mean(dim=(1, 2)).sum())
    return total


def train(
    net: MemAENet,
    train_windows: np.ndarray | WindowBatches,
    val_windows: np.ndarray,
    settings: TrainSettings,
    dist: Distributed | None = None,
    on_epoch: Callable[[int, MemAENet], None] | None = None,
) -> TrainHistory:
    """Trains in place and restores the weights of the best validation epoch.

    `val_windows` are the scaled held-out windows (a bounded sample); with several ranks each
    evaluates its share and the losses are averaged over all of them. `on_epoch(epoch, net)`
    is called after every epoch with the weights of that epoch (bench/kddcup99.py measures
    quality per epoch with it); the network is back in training mode afterwards.
    """
    dist = dist or Distributed()
    torch.set_num_threads(training_threads())
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    source: WindowBatches = (
        ArrayWindows(train_windows, settings.batch_size, settings.seed, dist.rank, dist.world)
        if isinstance(train_windows, np.ndarray)
        else train_windows
    )
    val_mine = np.ascontiguousarray(val_windows[dist.rank :: dist.world], dtype=np.float32)
    net.to(device)
    model: torch.nn.Module = net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    history = TrainHistory(device=str(device), world_size=dist.world, steps_per_epoch=source.steps())
    best_state: dict[str, torch.Tensor] | None = None
    best_val = float("inf")
    stale = 0
    bar = _progress(settings.epochs, settings.progress and dist.is_main)
    try:
        for epoch in range(settings.epochs):
            started = time.perf_counter()
            model.train()
            epoch_loss, batches = 0.0, 0
            for batch in source.batches(epoch):
                x = torch.from_numpy(batch).to(device)
                recon, weights = model(x)
                loss = torch.mean((recon - x) ** 2)
                if weights is not None and settings.entropy_weight > 0:
                    loss = loss + settings.entropy_weight * attention_entropy(weights)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                epoch_loss += float(loss.detach())
                batches += 1
            val_sum = _reconstruction_error_sum(net, val_mine, 1024, device) if val_windows.shape[0] else 0.0
            train_loss, val_loss = _all_mean(
                [epoch_loss, float(batches), val_sum, float(val_mine.shape[0])], device, dist.world
            )
            if val_windows.shape[0] == 0:
                val_loss = train_loss
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            if val_loss < best_val - 1e-7:
                best_val, stale = val_loss, 0
                history.best_epoch = epoch + 1
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            elapsed = time.perf_counter() - started
            if epoch == 0:
                history.seconds_per_epoch = elapsed
                if dist.is_main:
                    log.info(
                        "epoch 1 took %.1f s (%d steps of %d windows%s); at most %d epochs: about %s",
                        elapsed,
                        source.steps(),
                        settings.batch_size,
                        f" on each of {dist.world} processes" if dist.world > 1 else "",
                        settings.epochs,
                        _duration(elapsed * settings.epochs),
                    )
            if on_epoch is not None:
                net.eval()
                on_epoch(epoch + 1, net)
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}", best=history.best_epoch)
                bar.update(1)
            log.debug("epoch %d loss %.6f val %.6f (%.2f s)", epoch + 1, train_loss, val_loss, elapsed)
            if stale >= settings.patience:
                break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.to("cpu").eval()
    return history


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
