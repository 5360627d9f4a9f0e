"""Stage-boundary callback: calls `method.end_stage` from `on_train_batch_end` and logs what it returns.

It fires right after the optimizer step that completes a boundary step. `trainer.global_step` counts optimizer
steps, and the method's stage advances at the boundary, so the micro-batches of the next accumulation window
(same global step) do not fire it again, and a resumed run (the stage is in the method's checkpoint state)
continues at the right boundary. Everything a boundary does — the transition and the optimizer reset — is the
method's (`Method.end_stage`); the LR restart is the scheduler's pure `lr_factor`, identical for APEX and the
restart-only control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class StageBoundaryCallback(L.Callback):
    def __init__(self, out_dir: str | None = None):
        self.out_dir = Path(out_dir) if out_dir else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        method, boundaries = pl_module.method, pl_module.boundaries
        step = trainer.global_step
        if method.stage >= len(boundaries) or step != boundaries[method.stage]:
            return
        opt = trainer.optimizers[0] if trainer.optimizers else None
        metrics = method.end_stage(pl_module.model, opt)
        # Straight to the loggers, once: `self.log` from a batch-end hook re-sends the last value at every
        # later logging step, which would read as a transition at every step.
        scalars = {f"stage/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        if self.out_dir is not None and trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / f"stage_{method.stage}_step{step}.json", "w") as f:
                json.dump({"step": step, **{k: v for k, v in metrics.items()
                                            if isinstance(v, (int, float, str, list, dict))}}, f, indent=1)
