"""`Apex`: the APEX training life cycle on a Hugging Face LLaMA-family model (method §1–§6).

    apex = Apex(model, ApexConfig())        # installs the score recorders (§1)
    with apex.assessing(): model(...)       # stage-1 assessment pass (eval / no-grad forwards count)
    apex.expand()                           # wrap (identity), select, permute: function-preserving (§2, §3)
    ... train; at each stage boundary: apex.restage(optimizer)   # fold → reselect → permute (§6)
    apex.fuse()                             # plain HF model again, same Parameter objects (§4)

Everything happens in place: no model rebuild, no new Parameter objects for the base weights. `install()`
(wrappers at an identity layout) may run before the model is sharded (FSDP2); selections, stage transitions
and the final fold then work one decoder layer at a time on gathered weights (`apexlm.apex.sharded`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from apexlm.apex.arch import inspect_model
from apexlm.apex.config import ApexConfig
from apexlm.apex.fuse import fuse_all
from apexlm.apex.layer_ops import LayerOps, operator_params, set_trainable, wrap_layer
from apexlm.apex.optim import build_param_groups
from apexlm.apex.params import count_params
from apexlm.apex.reselect import Sets, size_summary
from apexlm.apex.scoring import ScoreRecorder
from apexlm.apex.selection import UnitPlan, attention_plans, low_budget, low_budget_layers, unit_plan
from apexlm.apex.sharded import fold_in_place, gathered, model_is_sharded, transition

STATE_VERSION = 1


class Apex:
    """APEX on `model` (a LlamaForCausalLM-style model, possibly on the meta device) with `cfg`."""

    def __init__(self, model: nn.Module, cfg: ApexConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or ApexConfig()
        self.arch = inspect_model(model)
        self.recorder = ScoreRecorder(self.arch, self.cfg.scoring, self.cfg.k_ratio)
        self.recorder.attach()
        self.stage = 0
        self.installed = False   # wrappers are in the model (identity layout until the first selection)
        self.expanded = False    # the first selection was made
        self._init_gen: torch.Generator | None = None  # generator state before install's operator draws
        self.ops: list[LayerOps] = []
        self.plans: dict[str, list[UnitPlan]] | None = None
        self.low_budget_layers: list[int] | None = None
        a = self.arch
        self.unit_ids = {"attn": [torch.arange(a.n_kv) for _ in range(a.n_layers)],
                         "ffn": [torch.arange(a.d_ff) for _ in range(a.n_layers)]}
        self.sets: Sets | None = None
        self.base_total = count_params(model)[1]
        self._gen = torch.Generator().manual_seed(self.cfg.seed)

    # ---- scoring (§1) ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def assessing(self) -> Iterator[None]:
        """Record scores from every forward inside the block, eval mode and no-grad included."""
        prev = self.recorder.assessing
        self.recorder.assessing = True
        try:
            yield
        finally:
            self.recorder.assessing = prev

    @property
    def scores(self) -> dict[str, list[torch.Tensor]]:
        """{"attn": [(G,)] per layer, "ffn": [(d_ff,)] per layer}, reduced over processes (a collective)."""
        return self.recorder.scores()

    # ---- sizes -------------------------------------------------------------------------------------
    def _make_plans(self) -> dict[str, list[UnitPlan]]:
        """Per-layer sizes, fixed at the first expand (low-budget layers drawn once, §2)."""
        if self.plans is None:
            a, c = self.arch, self.cfg
            if low_budget(a.n_kv, c.k_ratio) and self.low_budget_layers is None:
                self.low_budget_layers = low_budget_layers(a.n_layers, a.n_kv, c.k_ratio, c.seed)
            ffn = unit_plan(a.d_ff, c.k_ratio, c.tuned_ffn_ratio, "FFN channels", "tuned_ffn_ratio")
            self.plans = {"attn": attention_plans(a.n_layers, a.n_kv, c.k_ratio, c.tuned_attn_ratio,
                                                  self.low_budget_layers, c.low_budget_undrawn_s2),
                          "ffn": [ffn] * a.n_layers}
        return self.plans

    # ---- life cycle --------------------------------------------------------------------------------
    def _wrap(self) -> None:
        """Install wrappers for the current plans (layout already permuted) and set requires_grad."""
        plans = self._make_plans()
        self.ops = [wrap_layer(self.arch, i, plans["attn"][i], plans["ffn"][i], self.cfg, self._gen)
                    for i in range(self.arch.n_layers)]
        set_trainable(self.model, self.cfg, self.operator_parameters())
        self.recorder.attach()                          # o_proj may be a wrapper now (pitfall 3)
        self.installed = True

    def install(self) -> None:
        """Put the wrappers in at the current layout with the operators at the identity (no selection yet).

        Sizes depend only on the ratios (§2), so this may run before the model is sharded; the first
        `expand()` is then a pure transition. Operator inits are drawn here, in the order `expand` always drew
        them; an init that is not the identity (`noise`) is zeroed until `expand` redraws it, so the
        assessment pass sees the plain model's function.
        """
        if self.installed:
            return
        self._init_gen = torch.Generator().set_state(self._gen.get_state())
        self._wrap()
        if self.cfg.init == "noise":
            for ops in self.ops:
                for group in ops.groups.values():
                    for p in group.mixer.parameters():
                        p.data.zero_()

    def _redraw_noise(self) -> None:
        """Restore the `noise` operator inits zeroed by `install` (same draws, same generator state after)."""
        if self.cfg.init != "noise" or self._init_gen is None:
            return
        after = self._gen.get_state()
        self._gen.set_state(self._init_gen.get_state())
        for i, ops in enumerate(self.ops):
            with gathered(self.arch.layers[i]):
                for name in ("attn", "ffn"):
                    if name in ops.groups:
                        ops.groups[name].mixer.reset_(self._gen)
        if not torch.equal(self._gen.get_state(), after):
            raise RuntimeError("APEX operator redraw did not reproduce the install-time draws")

    def expand(self, scores: dict[str, list[torch.Tensor]] | None = None) -> dict[str, Any]:
        """Select P/N/E from `scores` (default: the recorded ones, all-reduced) and permute (§2, §3).

        Installs the wrappers first unless `install()` ran. Function-preserving. The recorders are zeroed
        afterwards (their positions refer to the old layout).
        """
        if self.expanded:
            raise RuntimeError("Apex.expand() was already called: use restage() at stage boundaries")
        self.install()
        out = transition(self, fold=False, scores=scores)
        self._redraw_noise()
        self.expanded = True
        return out

    def restage(self, optimizer: torch.optim.Optimizer | None = None, reset_base_state: bool = True
                ) -> dict[str, Any]:
        """Stage boundary, in place, one layer at a time (§6; sharded weights too, `apexlm.apex.sharded`).

        fold → reselect from this stage's scores → permute → operators at identity → fresh optimizer state
        for the operators (and every param's when `reset_base_state`, else the base params' Adam moments are
        permuted like the weights) → zero the recorders. Returns stage metrics (time, how many parameters'
        Adam states were reset, P/N Jaccard overlap with the previous stage in original unit ids, sizes).
        """
        if not self.expanded:
            raise RuntimeError("Apex.restage() needs an expanded model: call expand() first")
        out = transition(self, fold=True, optimizer=optimizer, reset_base_state=reset_base_state)
        self.stage += 1
        return out

    def fuse(self) -> None:
        """Fold everything and replace the wrappers by nn.Linear holding the same weight Parameters (§4).

        The model is then a plain HF model: its state-dict keys equal the original ones. Recording hooks
        stay attached (call `close()` to remove them).
        """
        if not self.expanded:
            return
        if model_is_sharded(self.model):   # fold layer by layer in place; the wrappers stay, at identity
            fold_in_place(self)
            return
        fuse_all(self.arch, self.ops, self._gen)
        self.ops = []
        self.expanded = self.installed = False
        self.recorder.attach()

    def close(self) -> None:
        """Remove the recording hooks."""
        self.recorder.detach()

    # ---- parameters --------------------------------------------------------------------------------
    def operator_parameters(self) -> list[nn.Parameter]:
        """s2, mixer factors, mixer_vec, mixer_scale (deduplicated): reset at every stage."""
        roles = operator_params(self.ops)
        return roles["mixer"] + roles["vec_scale"] + roles["s2"]

    def param_groups(self, lr: float, weight_decay: float = 0.0, mixer_lr_scale: float = 1.0
                     ) -> list[dict[str, Any]]:
        """Optimizer groups (see `apexlm.apex.optim`): mixer factors at lr·mixer_lr_scale."""
        return build_param_groups(self.model, operator_params(self.ops), lr, weight_decay, mixer_lr_scale)

    def summary(self) -> dict[str, Any]:
        """Trainable / base-total / operator parameter counts, per-layer sizes, stage."""
        trainable, total = count_params(self.model)
        ops = sum(p.numel() for p in self.operator_parameters())
        out: dict[str, Any] = {"stage": self.stage, "expanded": self.expanded, "trainable": trainable,
                               "total": total - ops, "operator_params": ops,
                               "fraction": trainable / max(1, total - ops)}
        if self.plans is not None:
            out.update(size_summary(self.plans))
            out["low_budget_layers"] = self.low_budget_layers
        return out

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides the model's tensors needed to resume (no collective)."""
        plans = None
        if self.plans is not None:
            plans = {kind: [(p.k, p.tuned) for p in v] for kind, v in self.plans.items()}
        return {"version": STATE_VERSION, "config": self.cfg.to_dict(), "stage": self.stage,
                "expanded": self.expanded, "plans": plans, "low_budget_layers": self.low_budget_layers,
                "unit_ids": {k: [t.clone() for t in v] for k, v in self.unit_ids.items()},
                "sets": self.sets, "recorder": self.recorder.state_dict(), "rng": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; if it was expanded, install the wrappers WITHOUT permuting (unless
        `install()` already put them in: a sharded model, whose checkpoint loads before this).

        Call on a fresh Apex, then load the model checkpoint (it holds the permuted weights and the
        operator parameters): `apex.load_state_dict(s); model.load_state_dict(ckpt)`.
        """
        if self.expanded:
            raise RuntimeError("Apex.load_state_dict() needs a fresh, unexpanded Apex")
        self.stage = int(state["stage"])
        self.low_budget_layers = state["low_budget_layers"]
        plans = state["plans"]
        self.plans = None if plans is None else {k: [UnitPlan(*p) for p in v] for k, v in plans.items()}
        self.unit_ids = {k: [t.clone() for t in v] for k, v in state["unit_ids"].items()}
        self.sets = state["sets"]
        self.recorder.load_state_dict(state["recorder"])
        if state["expanded"]:
            if not self.installed:
                self._wrap()
            self.expanded = True
        self._gen.set_state(state["rng"])  # after _wrap, which draws operator inits from it
