"""The method contract: everything a training method may change, behind one small interface.

There is one training loop (`apexlm.models.module.CausalLMModule`). A method owns its whole life cycle:
(1) how the model is prepared (which parameters train, which modules are wrapped) — for a fresh run
    (`prepare`) or for a resume (`prepare_for_resume`: the checkpoint then supplies the state),
(2) the optimizer's parameter groups,
(3) its stages: the boundaries of a run (`boundaries`), the LR policy at them (`stage_lr`), and what happens
    at each one (`end_stage`: the method's own transition, then the optimizer reset its policy asks for —
    decided here and nowhere else), and what happens before each optimizer step,
(4) how the trained model becomes a plain Hugging Face model again for export (`finalize`, `close`),
(5) which extra state a checkpoint must carry to resume exactly (`state_dict` / `load_state_dict`).
Baselines and APEX implement the same contract, so every comparison runs the same code path; callbacks and
benchmark scripts only call these methods and log what they return.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.apex.params import count_params  # noqa: F401 - re-exported for the methods
from apexlm.errors import ConfigError
from apexlm.methods.schedule import stage_boundaries

NO_DECAY_KEYS = ("norm", "bias")
STAGE_LR = ("restart", "continue")


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


def clear_optimizer_state(optimizer: torch.optim.Optimizer) -> int:
    """Drop every parameter's optimizer state (Adam moments, step); returns how many states were dropped."""
    n = len(optimizer.state)
    optimizer.state.clear()
    return n


class Method:
    """Base class: full fine-tuning semantics; subclasses override what differs.

    `cfg` is the `method` config group (a mapping). Common keys: `name`, `stages`, `stage_steps`,
    `stage_lr` (restart|continue), `stage_optimizer_reset` (bool), `stage_restarts` (bool: run the stage
    schedule even when the method itself has nothing to do at a boundary — the restart-only control).
    """

    name = "base"
    #: whether stage transitions rewrite trainable tensors in place (APEX folds/permutes, HFT redraws);
    #: strategies that keep their own copy of the weights (DeepSpeed's fp32 partitions) would undo them.
    rewrites_weights_in_place: bool = False
    #: whether the method edits `p.grad` before the optimizer step (GMT/HFT masks): invisible to a strategy
    #: that keeps gradients in its own flat buffers (DeepSpeed ZeRO).
    edits_gradients: bool = False

    def __init__(self, cfg: Mapping[str, Any]):
        stages = cfg.get("stages", 1)
        if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
            raise ConfigError(f"method.stages={stages} must be an integer >= 1")
        if cfg.get("stage_lr", "continue") not in STAGE_LR:
            raise ConfigError(f"method.stage_lr={cfg.get('stage_lr')!r} is unknown; use restart or continue")
        self.cfg = cfg
        self._stage = 0
        self.optimizer_resets = 0  # boundaries at which the optimizer state was cleared

    @property
    def stage(self) -> int:
        """0-based index of the current stage: the one counter of the run's stages."""
        return self._stage

    # ---- preparation -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Set requires_grad / wrap modules; may return a new top-level module (peft does)."""
        return model

    def prepare_for_resume(self, model: nn.Module) -> nn.Module:
        """Give `model` the structure a checkpoint of this method was saved from, without any data pass.

        `load_state_dict` (the method state) runs next, then the weights load. Default: prepare as fresh.
        """
        return self.prepare(model, assess_batches=None)

    def check_model(self, dims: Mapping[str, Any], seed: int = 0) -> None:
        """Checks against the model's shape known before loading it (layers, KV heads, FFN width); raises a
        one-line ConfigError. Default: nothing to check."""

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

    def boundaries(self, total_steps: int) -> list[int]:
        """Optimizer steps after which a stage ends, for a run of `total_steps` (empty without stages)."""
        if not self.uses_stages:
            return []
        return stage_boundaries(total_steps, self.num_stages, self.cfg.get("stage_steps"))

    @property
    def stage_lr(self) -> str:
        return str(self.cfg.get("stage_lr", "continue")) if self.uses_stages else "continue"

    @property
    def optimizer_reset(self) -> bool:
        """Clear all Adam state at each boundary (what the official code's optimizer rebuild does)."""
        explicit = self.cfg.get("stage_optimizer_reset")
        return self.uses_stages and bool(self.stage_lr == "restart" if explicit is None else explicit)

    def transition(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """The method's own work at a boundary; advances the stage. Subclasses call super() first.

        When `optimizer_reset` is on, `end_stage` clears all optimizer state afterwards, so a transition
        then only handles state it must carry over (nothing); otherwise it fixes up its own state.
        """
        self._stage += 1
        return {}

    def end_stage(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """One stage boundary: the transition, then the optimizer reset the policy asks for; returns metrics.

        Metrics: the method's own, `optimizer_states_reset` (parameters whose Adam state was dropped),
        `transition_s`, `stage` (the stage that starts now).
        """
        t0 = time.perf_counter()
        metrics = dict(self.transition(model, optimizer) or {})
        dropped = float(metrics.get("optimizer_states_reset", 0))
        if self.optimizer_reset and optimizer is not None:
            dropped += clear_optimizer_state(optimizer)
            self.optimizer_resets += 1
        metrics["optimizer_states_reset"] = dropped
        metrics["transition_s"] = time.perf_counter() - t0
        metrics["stage"] = float(self.stage)
        return metrics

    def on_before_optimizer_step(self, model: nn.Module) -> None:
        """Called once gradients are accumulated, before clipping and the step (gradient masks go here)."""

    # ---- export ------------------------------------------------------------------------------------
    def finalize(self, model: nn.Module) -> nn.Module:
        """Turn the trained model into a plain HF model (fuse operators, merge adapters)."""
        return model

    def close(self) -> None:
        """Release what the method attached to the model (hooks); the model stays usable."""

    # ---- checkpoint state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "optimizer_resets": self.optimizer_resets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._stage = int(state.get("stage", 0))
        self.optimizer_resets = int(state.get("optimizer_resets", 0))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        trainable, total = count_params(model)
        return {"trainable_params": trainable, "total_params": total,
                "trainable_fraction": trainable / max(total, 1)}
