"""Throughput and memory: tokens/s over the fit, peak memory, wall time — the numbers summary.json reports."""

from __future__ import annotations

import resource
import time
from typing import Any

import lightning as L
import torch


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory if on GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ThroughputCallback(L.Callback):
    def __init__(self) -> None:
        self.train_time_s = 0.0
        self._t0: float | None = None
        self.tokens = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._tokens0 = pl_module.tokens_seen

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._t0 is None:
            return
        elapsed = time.perf_counter() - self._t0
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0 and elapsed > 0:
            rate = (pl_module.tokens_seen - self._tokens0) / elapsed
            pl_module.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:
            self.train_time_s += time.perf_counter() - self._t0
            self.tokens = pl_module.tokens_seen - self._tokens0
            self._t0 = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_time_s if self.train_time_s > 0 else 0.0
