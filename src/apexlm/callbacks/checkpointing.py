"""Exact resume: what a checkpoint must hold beyond Lightning's defaults, and how it is written and found.

Lightning already checkpoints the weights, the optimizer and LR-scheduler states, the loop counters and every
callback's `state_dict` (the StageCallback's `done` list). The module adds the method's state (APEX scores,
selection, stage, unit layout, its generator). This file adds the rest:

* `resolve_ckpt_path`: `ckpt_path=last` -> the newest `<log_dir>/<experiment_name>/runs/*/checkpoints/last.ckpt`.
* `AtomicCheckpointIO`: write to a temp file in the target's own folder, fsync, `os.replace` (Lightning's own
  writer stages the bytes in the system temp dir, which is only atomic when that is on the same file system);
  refuses to write non-finite weights, so the last good checkpoint survives a divergence.
* `ResumableSampler` / `ResumableLoader` / `make_resumable`: the data position. The training order is a pure
  function of (seed, epoch); the loader records how many batches of the epoch it has handed out and, on resume,
  skips exactly those. Rank r of W takes the r-th block of B examples of each global batch of W*B, so a W-process
  run sees the same examples per optimizer step as one process with W micro-batches (or one batch of W*B).
* `RngStateCallback`: the global torch / CUDA / numpy / python RNG states, put back when training restarts.
* `prepare_for_resume` / `restore_method_state`: the APEX resume order, Apex(model, cfg) ->
  apex.load_state_dict(state) (re-installs the wrappers) -> model.load_state_dict(checkpoint); no assessment pass.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from apexlm.errors import ConfigError, DataError


# ---- finding the checkpoint ------------------------------------------------------------------------
def resolve_ckpt_path(cfg: Mapping[str, Any]) -> str | None:
    """`ckpt_path` as a checkpoint: a requeued job's own last.ckpt first; null -> None; "last" -> this run dir's
    own last.ckpt, else (single run) the newest last.ckpt of this experiment's runs (training/job_checkpoint.py)."""
    from apexlm.training.job_checkpoint import last_checkpoint, requeued_checkpoint

    requeued = requeued_checkpoint()
    if requeued is not None:
        return requeued
    value = cfg.get("ckpt_path")
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        root = Path(str(cfg["paths"]["log_dir"])) / str(cfg["experiment_name"])
        decided, found = last_checkpoint(root)
        if not decided:
            raise ConfigError(f"ckpt_path=last found no {root / 'runs'}/*/checkpoints/last.ckpt; train with "
                              "callbacks.checkpoint.enabled=true first or give ckpt_path=<file.ckpt>")
        return found
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value} is not a checkpoint file; give an existing .ckpt or ckpt_path=last")
    return str(path)


# ---- writing it ------------------------------------------------------------------------------------
def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of floating tensors in a state dict that hold NaN or Inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to `<dir>/.<name>.tmp-<pid>`, fsync, os.replace: a reader sees the old file or the new one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        from apexlm.callbacks.guard import NonFiniteError

        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"refusing to save a checkpoint with non-finite weights ({bad[0]}, {len(bad)} tensors) at step "
                f"{checkpoint.get('global_step')}; the previous checkpoint is kept; lower optim.lr")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


# ---- data position ---------------------------------------------------------------------------------
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


# ---- global RNG ------------------------------------------------------------------------------------
class RngStateCallback(L.Callback):
    """Saves the global RNG states with each checkpoint; restores them when the resumed fit starts training."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},
                "python": random.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s, self._pending = self._pending, None
        if not s:
            return
        torch.set_rng_state(s["torch"])
        if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(s["cuda"])
        n = s["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(s["python"])


# ---- method state ----------------------------------------------------------------------------------
def prepare_for_resume(method: Any, model: nn.Module, assess_batches: Iterable[dict] | None) -> nn.Module:
    """Prepare `model` so that a checkpoint's method and model state can be loaded into it.

    APEX: only `Apex(model, cfg)` (no assessment pass, no expansion); the checkpoint's APEX state re-installs
    the wrappers in `on_load_checkpoint`, before Lightning loads the weights. A method may provide its own
    `prepare_for_resume(model)`; other methods prepare as for a fresh run.
    """
    custom = getattr(method, "prepare_for_resume", None)
    if callable(custom):
        return custom(model)
    if getattr(method, "apex_cfg", None) is not None and hasattr(method, "apex"):
        from apexlm.apex import Apex

        method.apex = Apex(model, method.apex_cfg)
        return model
    return method.prepare(model, assess_batches=assess_batches)


def restore_method_state(method: Any, state: Mapping[str, Any]) -> None:
    """`method.load_state_dict(state)`, then put APEX's generator back to its saved state.

    `Apex.load_state_dict` restores the generator and then re-wraps, which draws operator inits from it; the
    uninterrupted run would continue from the saved state, so it is restored again here.
    """
    method.load_state_dict(state)
    apex, saved = getattr(method, "apex", None), (state or {}).get("apex")
    gen = getattr(apex, "_gen", None)
    if isinstance(gen, torch.Generator) and isinstance(saved, Mapping) and saved.get("rng") is not None:
        gen.set_state(saved["rng"])
