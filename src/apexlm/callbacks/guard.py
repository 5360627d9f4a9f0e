"""Run guards: a non-finite loss or gradient never reaches the weights, and DDP ranks never silently diverge.

`NumericalGuard` checks, once per optimizer step and before the update, that every micro-batch loss of the
accumulation window and the total gradient norm are finite. `on_nonfinite="stop"` (default) raises
`NonFiniteError` (a UserError: the entry point prints one line) before the update, so neither the weights nor
any checkpoint ever hold the bad step; `"skip"` drops the gradients instead (the optimizer leaves every
parameter and its moments untouched; the step still counts for the LR schedule) and logs
`train/nonfinite_skips`. Under DDP the decision is reduced over ranks, so every rank stops or skips together.
With fp16 loss scaling (precision 16-*) the GradScaler owns overflowing gradients; only the loss is checked.

`RankAgreementGuard` all-gathers a position-sensitive fingerprint of the parameters after each stage
transition: every rank must have selected and permuted the same units (a cheap check, boundaries only).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from apexlm.errors import UserError

MODES = ("stop", "skip")


class NonFiniteError(UserError):
    """The loss, a gradient or the weights became NaN/Inf."""


class RankDivergenceError(RuntimeError):
    """DDP ranks hold different parameters after a stage transition (a bug, not a user error)."""


def _step_label(trainer: L.Trainer) -> str:
    return f"optimizer step {trainer.global_step + 1}"


class NumericalGuard(L.Callback):
    def __init__(self, on_nonfinite: str = "stop") -> None:
        if on_nonfinite not in MODES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r}; use one of {MODES}")
        self.mode = on_nonfinite
        self.skipped = 0
        self._loss_ok: torch.Tensor | None = None  # AND over the window's micro-batch losses (no device sync)
        self._last_loss: torch.Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        ok = torch.isfinite(loss.detach()).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok
        self._last_loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        loss_ok, self._loss_ok = self._loss_ok, None
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        flags = [torch.ones((), dtype=torch.bool, device=pl_module.device) if loss_ok is None else loss_ok]
        if grads and not str(trainer.precision).startswith("16"):
            flags.append(torch.isfinite(torch.nn.utils.get_total_norm(grads)).to(flags[0].device))
        ok = torch.stack(flags).tolist()  # one device sync per optimizer step
        bad_loss, bad_grad = not ok[0], len(ok) > 1 and not ok[1]
        bad = bad_loss or bad_grad
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        what = "loss" if bad_loss else "gradient" if bad_grad else "loss or gradient on another rank"
        if self.mode == "skip":
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self.skipped += 1
            pl_module.log("train/nonfinite_skips", float(self.skipped), on_step=True, on_epoch=False)
            return
        loss_txt = f" (loss={float(self._last_loss):.4g})" if self._last_loss is not None and bad_loss else ""
        raise NonFiniteError(
            f"non-finite {what}{loss_txt} at {_step_label(trainer)}; stopped before the update, so the weights "
            f"and the last checkpoint stay finite{_last_ckpt(trainer)}; lower optim.lr, check the data, or set "
            "callbacks.guard.on_nonfinite=skip")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _last_ckpt(trainer: L.Trainer) -> str:
    cb = trainer.checkpoint_callback
    path = getattr(cb, "last_model_path", "") if cb is not None else ""
    return f" ({path})" if path else ""


def param_fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Σ_params Σ_i w_i·p_i in float64 with w_i = 1 + (i mod 97): changes when units are permuted."""
    total = torch.zeros((), dtype=torch.float64, device=next(module.parameters()).device)
    for p in module.parameters():
        flat = p.detach().reshape(-1)
        w = torch.arange(flat.numel(), device=flat.device) % 97 + 1
        total = total + (flat.double() * w).sum()
    return total


class RankAgreementGuard(L.Callback):
    """After each stage transition under DDP, every rank must hold exactly the same parameters.

    Checked at the first batch start (or train end) after the method's stage advanced, so it never depends on
    the order in which callbacks run at the boundary's batch end.
    """

    def __init__(self) -> None:
        self._seen_stage = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen_stage = int(pl_module.method.stage)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = int(pl_module.method.stage)
        if stage == self._seen_stage:
            return
        self._seen_stage = stage
        if trainer.world_size <= 1 or type(trainer.strategy).__name__ not in ("DDPStrategy", "DDPSpawnStrategy"):
            return  # one process, or a sharded strategy (ranks hold different shards)
        fingerprints = pl_module.all_gather(param_fingerprint(pl_module)).reshape(-1)
        stages = pl_module.all_gather(torch.tensor([float(stage)], device=pl_module.device)).reshape(-1)
        if not bool((fingerprints == fingerprints[0]).all()) or not bool((stages == stage).all()):
            raise RankDivergenceError(f"DDP ranks disagree after the stage transition into stage {stage}: "
                                      f"stages {stages.tolist()}, fingerprints {fingerprints.tolist()}")
        for logger in trainer.loggers:
            logger.log_metrics({"stage/ranks_agree": 1.0}, step=trainer.global_step)
