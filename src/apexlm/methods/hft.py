"""Half Fine-Tuning (HFT, Hui et al. 2024) behind the method contract.

Each stage trains a seeded random half of every decoder layer's weight matrices (q,k,v,o,gate,up,down; the
draw and its rounding are in `hft_selection`) and freezes the other half; the half is redrawn at every stage
boundary (`transition`). Norms and embeddings are frozen unless `train_norms` / `train_embeddings` say so,
in which case they train in every stage.

The optimizer is built once, so `param_groups` holds every candidate matrix, trainable now or not. A frozen
matrix gets no update because (1) `requires_grad` is off, so backward leaves its `.grad` at None, and (2)
`on_before_optimizer_step` sets its `.grad` to None anyway (a gradient left from an earlier stage, or
`freeze=mask`). torch's Adam/AdamW skip parameters whose grad is None entirely: no moment update and no
decoupled weight decay (verified in torch 2.13, `Adam._init_group` collects only params with a grad), so a
frozen matrix stays bitwise unchanged. Its Adam moments are kept while frozen and used again when it is
redrawn, unless `stage_optimizer_reset` clears all optimizer state at the boundary.

`freeze` chooses how matrices are frozen:
- `requires_grad` (default): no weight gradients are computed for the frozen half (cheaper backward). Single
  process only: DDP registers the parameters that require grad when it wraps the model, so matrices drawn in a
  later stage would never be all-reduced. The method stops with an error on its first step under DDP.
- `mask`: every candidate keeps `requires_grad`; the frozen half's gradients are dropped before the step.
  Costs the full backward, works under DDP. (FSDP/DeepSpeed flatten parameters; neither mode supports them.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.errors import ConfigError
from apexlm.methods.base import NO_DECAY_KEYS, Method
from apexlm.methods.hft_selection import DEFAULT_GROUPS, MatrixUnit, draw_selection, find_units

FREEZE_MODES = ("requires_grad", "mask")


class HftMethod(Method):
    """Train a redrawn random half of each layer's matrices per stage."""

    name = "hft"
    rewrites_weights_in_place = True  # each boundary redraws the trained half (requires_grad, Adam state)
    edits_gradients = True  # drops the frozen half's p.grad before each step

    def __init__(self, cfg: Mapping[str, Any], seed: int = 0):
        super().__init__(cfg)
        self.ratio = float(cfg.get("ratio", 0.5))
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"method.ratio={self.ratio} must be in (0, 1] "
                              "(the trained share of each layer's matrices)")
        self.freeze = str(cfg.get("freeze", "requires_grad"))
        if self.freeze not in FREEZE_MODES:
            raise ConfigError(f"method.freeze={self.freeze!r} is unknown; "
                              f"choose one of {', '.join(FREEZE_MODES)}")
        self.seed = int(cfg["seed"]) if cfg.get("seed") is not None else int(seed)
        self.train_norms = bool(cfg.get("train_norms", False))
        self.train_embeddings = bool(cfg.get("train_embeddings", False))
        groups = cfg.get("matrix_groups") or DEFAULT_GROUPS
        self.groups = [tuple(str(k) for k in g) for g in groups]
        self.units: list[MatrixUnit] = []
        self.selection: list[str] = []
        self._unit_params: dict[str, list[nn.Parameter]] = {}
        self._always: dict[int, nn.Parameter] = {}  # norms / embeddings that train in every stage
        self._frozen: list[nn.Parameter] = []
        self._dist_checked = False

    # ---- preparation -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Freeze everything, then unfreeze this stage's half (and the always-trained norms/embeddings)."""
        self.units = find_units(model, self.groups)
        if not self.units:
            raise ConfigError(f"method.matrix_groups {self.groups} match no matrix inside the model's "
                              "decoder layers (`...layers.<i>...`); check the module names")
        for p in model.parameters():
            p.requires_grad_(False)
        self._unit_params = {u.name: list(model.get_submodule(u.name).parameters(recurse=False))
                             for u in self.units}
        self._always = {}
        if self.train_norms:
            self._always.update({id(p): p for n, p in model.named_parameters() if "norm" in n.lower()})
        if self.train_embeddings:
            for module in (model.get_input_embeddings(), model.get_output_embeddings()):
                if module is not None:
                    self._always.update({id(p): p for p in module.parameters()})
        for p in self._always.values():
            p.requires_grad_(True)
        self._apply(draw_selection(self.units, self.ratio, self.seed, self.stage))
        return model

    def _apply(self, selection: Iterable[str]) -> int:
        """Make `selection` the trained units; returns how many units changed state."""
        chosen = set(selection)
        unknown = chosen - set(self._unit_params)
        if unknown:
            raise ValueError(f"HFT selection names units this model does not have: {sorted(unknown)[:3]}")
        changed = len(chosen.symmetric_difference(self.selection)) if self.selection else len(chosen)
        frozen = []
        for name, params in self._unit_params.items():
            train = name in chosen
            for p in params:
                p.requires_grad_(train or self.freeze == "mask")
                if not train:
                    p.grad = None
                    frozen.append(p)
        self.selection = sorted(chosen)
        self._frozen = frozen
        return changed

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Every candidate matrix (trained now or later) and the always-trained params (built once)."""
        wanted = {id(p) for ps in self._unit_params.values() for p in ps} | set(self._always)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if id(p) not in wanted:
                continue
            (no_decay if any(k in name.lower() for k in NO_DECAY_KEYS) or p.ndim < 2 else decay).append(p)
        groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay"},
                  {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"}]
        return [g for g in groups if g["params"]]

    # ---- steps and stages --------------------------------------------------------------------------
    def on_before_optimizer_step(self, model: nn.Module) -> None:
        """Drop the frozen half's gradients so the optimizer skips those matrices entirely."""
        if not self._dist_checked:
            self._dist_checked = True
            self._check_distributed()
        for p in self._frozen:
            p.grad = None

    def _check_distributed(self) -> None:
        """Stop before the first update when a redraw under DDP would leave new matrices unsynced."""
        dist = torch.distributed
        multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if multi and self.freeze == "requires_grad" and self.uses_stages:
            raise ConfigError("method.freeze=requires_grad cannot redraw HFT's half under DDP "
                              "(DDP only syncs the parameters that required grad when it wrapped the model); "
                              "set method.freeze=mask")

    def transition(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Redraw the trained half for the next stage."""
        super().transition(model, optimizer)
        changed = self._apply(draw_selection(self.units, self.ratio, self.seed, self.stage))
        return {"hft_units_changed": float(changed), "hft_block_fraction": self.block_fraction()}

    # ---- state and reporting -----------------------------------------------------------------------
    def block_fraction(self) -> float:
        """Share of the candidate matrices' parameters that train in the current stage."""
        chosen = set(self.selection)
        sel = sum(p.numel() for n, ps in self._unit_params.items() if n in chosen for p in ps)
        total = sum(p.numel() for ps in self._unit_params.values() for p in ps)
        return sel / max(total, 1)

    def state_dict(self) -> dict[str, Any]:
        """Stage, seed (the draw is a pure function of both) and the current selection itself."""
        return {**super().state_dict(), "seed": self.seed, "selection": list(self.selection)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.seed = int(state.get("seed", self.seed))
        if not self._unit_params:
            self.selection = list(state.get("selection") or [])
            return
        selection = state.get("selection") or draw_selection(self.units, self.ratio, self.seed, self.stage)
        self._apply(selection)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """Current stage: trained matrices + always-trained params over all params; block-matrix share."""
        chosen = set(self.selection)
        trainable = sum(p.numel() for n, ps in self._unit_params.items() if n in chosen for p in ps)
        unit_ids = {id(p) for ps in self._unit_params.values() for p in ps}
        trainable += sum(p.numel() for i, p in self._always.items() if i not in unit_ids)
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        return {"trainable_params": trainable, "total_params": total,
                "trainable_fraction": trainable / max(total, 1),
                "hft_block_fraction": self.block_fraction(), "hft_stage": self.stage,
                "hft_units_trained": len(chosen), "hft_units_total": len(self._unit_params)}
