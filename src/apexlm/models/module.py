"""CausalLMModule: the one training loop every method runs through.

Loss is token-weighted: validation sums token losses over the whole split and divides by the token count, so
val/ppl is the perplexity of the split (not a mean of per-batch means). The method object decides what trains
and what happens at stage boundaries; this module only runs forward/backward, the optimizer and the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from apexlm.errors import ConfigError
from apexlm.methods.base import Method, count_params
from apexlm.methods.schedule import lr_factor


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over labelled positions, and their count.

    logits (B,T,V), labels (B,T) with -100 where no loss. Shift by one: position t predicts t+1.
    """
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()  # (B*(T-1), V)
    shift_labels = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    return loss, (shift_labels != -100).sum()


class CausalLMModule(L.LightningModule):
    def __init__(self, model: nn.Module, method: Method, optim: Mapping[str, Any], total_steps: int,
                 base_params: int | None = None):
        super().__init__()
        self.model = model
        self.base_params = base_params  # the plain model's parameter count: the budget's denominator
        self.method = method
        self.optim_cfg = dict(optim)
        self.total_steps = int(total_steps)
        self.boundaries = method.boundaries(self.total_steps)
        self._val_sum = torch.zeros((), dtype=torch.float64)
        self._val_count = torch.zeros((), dtype=torch.long)
        self.tokens_seen = 0

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return out.logits  # (B,T,V)

    # ---- train / val -------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_sum, count = token_loss_sum(self(batch), batch["labels"])
        loss = loss_sum / count.clamp(min=1)
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/ppl", torch.exp(loss.detach().clamp(max=30)), on_step=True, on_epoch=False)
        self.log("train/tokens", float(self.tokens_seen), on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = torch.zeros((), dtype=torch.long, device=self.device)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss_sum, count = token_loss_sum(self(batch), batch["labels"])
        self._val_sum += loss_sum.double()
        self._val_count += count

    def on_validation_epoch_end(self) -> None:
        total = self.all_gather(self._val_sum).sum() if self.trainer.world_size > 1 else self._val_sum
        count = self.all_gather(self._val_count).sum() if self.trainer.world_size > 1 else self._val_count
        loss = (total / count.clamp(min=1)).float()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss.clamp(max=30)), sync_dist=False)
        self.log("val/tokens_seen", float(self.tokens_seen), sync_dist=False)

    # ---- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        groups = self.method.param_groups(self.model, float(o["lr"]), float(o.get("weight_decay", 0.0)))
        opt = torch.optim.AdamW(groups, lr=float(o["lr"]), betas=tuple(o.get("betas", (0.9, 0.95))),
                                eps=float(o.get("eps", 1e-8)))
        fn = partial(lr_factor, total_steps=self.total_steps, warmup_ratio=float(o.get("warmup_ratio", 0.03)),
                     boundaries=self.boundaries, policy=self.method.stage_lr,
                     restart_warmup_ratio=float(o.get("restart_warmup_ratio", 0.005)),
                     schedule=str(o.get("schedule", "cosine")))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.on_before_optimizer_step(self.model)

    def on_train_start(self) -> None:
        # HF `from_pretrained` returns eval-mode models and Lightning keeps the mode it finds; training must
        # run in train mode (APEX records scores only then, gradient checkpointing is active only then).
        self.model.train()
        trainable, total = count_params(self.model)
        base = self.base_params or total  # operators/adapters are extra: the fraction is of the plain model
        self.log_dict({"params/trainable": float(trainable), "params/total": float(total),
                       "params/base": float(base), "params/trainable_fraction": trainable / base},
                      rank_zero_only=True)

    # ---- checkpoint --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["apexlm_method"] = self.method.state_dict()
        checkpoint["apexlm_method_name"] = str(self.method.cfg.get("name", self.method.name))
        checkpoint["apexlm_tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Runs before Lightning loads the weights: the method state (APEX wrappers) must be in place first."""
        saved, name = checkpoint.get("apexlm_method_name"), str(self.method.cfg.get("name", self.method.name))
        if saved is not None and saved != name:
            raise ConfigError(f"the checkpoint was trained with method={saved}, this run uses method={name}; "
                              f"resume with method={saved} or start without ckpt_path")
        self.method.load_state_dict(checkpoint.get("apexlm_method", {}))
        self.tokens_seen = int(checkpoint.get("apexlm_tokens_seen", 0))


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 30.0))
