"""The data position as part of the checkpoint: a resumed run sees exactly the batches it had not seen.

The training order is a pure function of (seed, epoch); the loader records how many batches of the epoch it
has handed out and, on resume, skips exactly those. Rank r of W takes the r-th block of B examples of each
global batch of W*B, so a W-process run sees the same examples per optimizer step as one process with W
micro-batches (or one batch of W*B).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities.types import _Stateful
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from apexlm.errors import DataError


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """Epoch order = randperm(n, seed + epoch); rank r gets examples [s*W*B + r*B, s*W*B + (r+1)*B) of step s.

    A DistributedSampler subclass so Lightning keeps it under DDP (and calls `set_epoch`). World size and rank
    default to the current process group (1 / 0 outside one). The incomplete last global batch is dropped.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        world, me = _world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = me if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.batch_size = int(batch_size)
        self.steps = len(dataset) // (self.batch_size * num_replicas)  # type: ignore[arg-type]
        if self.steps == 0:
            raise DataError(f"the train set has {len(dataset)} examples, fewer than one global batch of "  # type: ignore[arg-type]
                            f"data.batch_size={batch_size} x {num_replicas} processes; lower data.batch_size")
        self.num_samples = self.steps * self.batch_size
        self.total_size = self.num_samples * num_replicas
        self._resume: tuple[int, int] | None = None
        self._skip = 0

    def resume_at(self, epoch: int, batches: int) -> None:
        """Skip the first `batches` batches of `epoch` (once, if that epoch is the next one iterated)."""
        self._resume = (int(epoch), int(batches))
        self.set_epoch(int(epoch))

    def claim_skip(self) -> int:
        """Batches to skip in the iteration that starts now (0 unless resuming into this very epoch)."""
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume, self._skip = None, min(skip, self.steps)
        return self._skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(len(self.dataset))  # type: ignore[arg-type]
        b, w, r = self.batch_size, self.num_replicas, self.rank
        order = order[: self.steps * w * b].view(self.steps, w, b)[:, r]      # (steps, B): this rank's blocks
        skip, self._skip = self._skip, 0
        return iter(order[skip:].reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is part of Lightning's checkpoint (`state_dict`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch: int | None = None
        self._served = 0

    def __iter__(self) -> Iterator[Any]:  # a generator: nothing runs before the first batch is asked for
        sampler = self.sampler
        skip = sampler.claim_skip() if isinstance(sampler, ResumableSampler) else 0
        self._epoch, self._served = int(getattr(sampler, "epoch", 0)), skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch = self._epoch if self._epoch is not None else int(getattr(self.sampler, "epoch", 0))
        return {"epoch": epoch, "batches": self._served}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if isinstance(self.sampler, ResumableSampler):
            self.sampler.resume_at(int(state.get("epoch", 0)), int(state.get("batches", 0)))


def make_resumable(datamodule: L.LightningDataModule) -> None:
    """Serve the datamodule's training batches through a ResumableLoader (same dataset, batching, workers)."""
    build = datamodule.train_dataloader
    seed = int(getattr(datamodule, "seed", 0))

    def train_dataloader() -> Any:
        base = build()
        if isinstance(base, _Stateful) or not isinstance(base, DataLoader) or base.batch_size is None:
            return base
        sampler = ResumableSampler(base.dataset, base.batch_size, seed=seed,
                                   shuffle=not isinstance(base.sampler, SequentialSampler))
        workers = base.num_workers
        return ResumableLoader(base.dataset, batch_size=base.batch_size, sampler=sampler, drop_last=base.drop_last,
                               collate_fn=base.collate_fn, num_workers=workers, pin_memory=base.pin_memory,
                               worker_init_fn=base.worker_init_fn, persistent_workers=base.persistent_workers,
                               prefetch_factor=base.prefetch_factor if workers > 0 else None,
                               generator=torch.Generator().manual_seed(seed))  # never draws on the global RNG

    datamodule.train_dataloader = train_dataloader  # type: ignore[method-assign]
