"""Stage callback: acts at stage boundaries from `on_train_batch_end` (method §6).

It fires once per boundary, right after the optimizer step that completes the boundary step (gradient
accumulation aware: `trainer.global_step` counts optimizer steps, so micro-batches of the next accumulation
window do not trigger it again). At a boundary it lets the method do its work (APEX: fuse -> reselect ->
permute -> reset operators), then clears optimizer state when the method's policy asks for it (the official
code rebuilds its optimizer, which resets Adam moments). The LR restart itself lives in the scheduler's pure
`lr_factor`, so it is identical for APEX and for the restart-only control.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class StageCallback(L.Callback):
    def __init__(self, out_dir: str | None = None):
        self.out_dir = Path(out_dir) if out_dir else None
        self.done: list[int] = []
        self.resets = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step not in pl_module.boundaries or step in self.done:
            return
        t0 = time.perf_counter()
        opt = trainer.optimizers[0] if trainer.optimizers else None
        method = pl_module.method
        metrics = dict(method.on_stage_end(pl_module.model, opt) or {})
        # parameters whose Adam state was dropped at this boundary, by the method (APEX's restage) or here
        metrics["optimizer_states_reset"] = float(metrics.get("optimizer_states_reset", 0))
        if method.optimizer_reset and opt is not None:
            if not metrics["optimizer_states_reset"]:  # APEX's restage already reset every state
                metrics["optimizer_states_reset"] += method.clear_optimizer_state(opt)
            self.resets += 1
        self.done.append(step)
        metrics["transition_s"] = time.perf_counter() - t0
        metrics["stage"] = float(method.stage)
        # Straight to the loggers, once: `self.log` from a batch-end hook re-sends the last value at every
        # later logging step, which would read as a transition at every step.
        scalars = {f"stage/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        if self.out_dir is not None and trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / f"stage_{len(self.done)}_step{step}.json", "w") as f:
                json.dump({"step": step, **{k: v for k, v in metrics.items()
                                            if isinstance(v, (int, float, str, list, dict))}}, f, indent=1)
        self._check_ranks_agree(trainer, pl_module)

    @staticmethod
    def _check_ranks_agree(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Cheap DDP guard: every rank must be at the same stage after a transition."""
        if trainer.world_size <= 1:
            return
        stage = torch.tensor([float(pl_module.method.stage)], device=pl_module.device)
        gathered = pl_module.all_gather(stage)
        if not torch.all(gathered == stage):
            raise RuntimeError(f"ranks disagree on the APEX stage after a transition: {gathered.tolist()}")

    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done), "resets": self.resets}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = list(state_dict.get("done", []))
        self.resets = int(state_dict.get("resets", 0))
