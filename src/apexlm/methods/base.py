"""The method contract: everything a training method may change, behind one small interface.

There is one training loop (`apexlm.models.module.CausalLMModule`). A method only decides
(1) how the model is prepared (which parameters train, which modules are wrapped),
(2) the optimizer's parameter groups,
(3) what happens at stage boundaries and before each optimizer step,
(4) how the trained model becomes a plain Hugging Face model again for export,
(5) which extra state a checkpoint must carry to resume exactly.
Baselines and APEX implement the same contract, so every comparison runs the same code path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.apex.params import count_params  # noqa: F401 - re-exported for the methods

NO_DECAY_KEYS = ("norm", "bias")


def decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, **extra: Any
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a no-decay group (norms and biases)."""
    decay, no_decay, seen = [], [], set()
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if any(k in name.lower() for k in NO_DECAY_KEYS) or p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay", **extra},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay", **extra},
    ]
    return [g for g in groups if g["params"]]


class Method:
    """Base class: full fine-tuning semantics; subclasses override what differs.

    `cfg` is the `method` config group (a mapping). Common keys: `name`, `stages`, `stage_steps`,
    `stage_lr` (restart|continue), `stage_optimizer_reset` (bool), `stage_restarts` (bool: run the stage
    schedule even when the method itself has nothing to do at a boundary — the restart-only control).
    """

    name = "base"
    # True when stage transitions rewrite trainable tensors in place (fold, permute, reset): such a method
    # cannot run under a strategy that keeps its own master copy of the weights (DeepSpeed ZeRO's fp32
    # partitions are copied back over the parameters after each step and would undo every rewrite).
    rewrites_weights_in_place: bool = False
    # True when the method edits `p.grad` before the optimizer step (masks): invisible to a strategy that keeps
    # gradients in its own flat buffers (DeepSpeed ZeRO).
    edits_gradients: bool = False

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.stage = 0

    # ---- preparation -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Set requires_grad / wrap modules; may return a new top-level module (peft does)."""
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(model.named_parameters(), lr, weight_decay)

    # ---- stages ------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return int(self.cfg.get("stages", 1) or 1)

    @property
    def uses_stages(self) -> bool:
        """Whether boundaries are acted on at all (the method's own work or the restart-only control)."""
        return self.num_stages > 1 or bool(self.cfg.get("stage_steps"))

    @property
    def stage_lr(self) -> str:
        return str(self.cfg.get("stage_lr", "continue")) if self.uses_stages else "continue"

    @property
    def optimizer_reset(self) -> bool:
        """Clear all Adam state at each boundary (what the official code's optimizer rebuild does)."""
        explicit = self.cfg.get("stage_optimizer_reset")
        return self.uses_stages and bool(self.stage_lr == "restart" if explicit is None else explicit)

    def on_stage_end(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, float]:
        """Called at each boundary before the generic optimizer reset. Returns metrics to log."""
        self.stage += 1
        return {}

    def on_before_optimizer_step(self, model: nn.Module) -> None:
        """Called once gradients are accumulated, before clipping and the step (gradient masks go here)."""

    # ---- export ------------------------------------------------------------------------------------
    def finalize(self, model: nn.Module) -> nn.Module:
        """Turn the trained model into a plain HF model (fuse operators, merge adapters)."""
        return model

    # ---- checkpoint state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state.get("stage", 0))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        trainable, total = count_params(model)
        return {"trainable_params": trainable, "total_params": total,
                "trainable_fraction": trainable / max(total, 1)}
