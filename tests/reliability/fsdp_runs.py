"""Runs for the FSDP2-vs-DDP tests: ONE pair of gloo processes trains every configuration in turn.

Launching costs most of a micro run (imports, process group), so `run_all` spawns two processes once and each
calls the real pipeline (`apexlm.training.run.fit`) for every (config, strategy) in sequence. LOCAL_RANK etc.
are set as a launcher (torchrun) would, so Lightning treats the processes as created externally and shares the
process group across the fits. Every run writes its export under <tmp>/<name>/export (rank 0).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.multiprocessing as mp

from tests.support.runs import MICRO, fit


class Killed(RuntimeError):
    """Stands for the process dying."""


class KillAt(L.Callback):
    """Raise in on_train_batch_end of optimizer step `step`: after the stage boundary callback acted on that step
    and before ModelCheckpoint (Lightning runs checkpoint callbacks last) saved it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")

COMMON = ["debug=fdr", *MICRO, "threads=1", "logger=csv", "trainer.max_steps=6", "method.stages=3",
          "trainer.limit_val_batches=0", "method.assess_samples=8", "data.batch_size=2", "data.max_train_samples=32",
          "export=true", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
          "callbacks.rich_progress=false"]
STRATEGIES = {"ddp": ["trainer=ddp"], "fsdp": ["trainer=fsdp"]}
EXPERIMENTS = {
    "apex_cpt": ["experiment=apex_cpt"],
    "apex_it": ["experiment=apex_it", "trainer.limit_val_batches=2", "trainer.val_check_interval=3"],  # + val
    "full_it": ["experiment=full_it", "method.stage_lr=restart"],    # optimizer resets at the boundaries
    "lora_it": ["experiment=lora_it"],
    "hft_it": ["experiment=hft_it", "method.freeze=mask"],         # redraws need every grad synced
    "gmt_it": ["experiment=gmt_it"],                               # whole-tensor quantile of sharded grads
}
# The resume pair: the FSDP apex_cpt run with a checkpoint every step (boundaries at 2 and 4), killed at step 4
# (after the second transition, before that step's checkpoint), then resumed from its last checkpoint: step 3,
# mid-stage, a sharded folder holding both ranks' partial scores of stage 2.
CKPT = ["callbacks.checkpoint.enabled=true", "callbacks.checkpoint.every_n_steps=1"]
KILL_STEP = 4


def plan(tmp: Path) -> list[tuple[str, list[str], int | None]]:
    """(name, overrides, kill step) in run order."""
    runs = [(f"{exp}_{strat}", [*COMMON, *o, *s], None)
            for exp, o in EXPERIMENTS.items() for strat, s in STRATEGIES.items()]
    for strat, tag in (("fsdp", ""), ("ddp", "_ddp")):   # DDP: the same pair through a checkpoint file
        base = [*COMMON, *EXPERIMENTS["apex_cpt"], *STRATEGIES[strat], *CKPT]
        runs.append((f"killed{tag}", base, KILL_STEP))
        runs.append((f"resumed{tag}", [*base, f"ckpt_path={tmp / f'killed{tag}' / 'checkpoints' / 'last.ckpt'}"],
                     None))
    return runs


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update({"LOCAL_RANK": str(rank), "NODE_RANK": "0", "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WANDB_MODE": "disabled"})
    torch.set_num_threads(1)
    root = Path(tmp)
    for name, overrides, kill in plan(root):
        run_dir = root / name
        try:
            fit([*overrides, f"paths.log_dir={run_dir}/logs"], run_dir, *([KillAt(kill)] if kill else []))
        except Killed:
            pass
        (run_dir / f"done{rank}").write_text("ok")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_all(tmp: Path) -> Path:
    """Train every run of `plan` in one pair of processes; returns `tmp`."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp)), nprocs=2, join=True)
    return tmp
