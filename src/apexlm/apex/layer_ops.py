"""Install and remove the expanded linear modules of one layer (method §3.3–§3.6, §5).

Given the layer's attention and FFN sizes (in the already-permuted layout N | P | E | rest):
  attention, k > 0 and an operator: v = ColumnWrapper, o = RowWrapper sharing one OperatorGroup of size
      k·d_h (v owns its scale); q, k = s2-only column wrappers over the tuned rows when finetune_qk;
  attention with E only (low-budget mode): s2-only v/o (and q/k with finetune_qk);
  FFN, k > 0 and an operator: up, gate = ColumnWrapper (each owns a scale), down = RowWrapper, all
      sharing one OperatorGroup of size k.
A wrapper is installed only when it changes something (an s2 delta or a mixer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from apexlm.apex.arch import Arch
from apexlm.apex.config import ApexConfig
from apexlm.apex.expanded_linear import ColumnWrapper, ExpandedLinear, OperatorGroup, RowWrapper
from apexlm.apex.mixers import make_mixer
from apexlm.apex.selection import UnitPlan


@dataclass
class LayerOps:
    """The wrappers and shared operators installed in one layer."""

    wrappers: dict[str, ExpandedLinear] = field(default_factory=dict)   # projection name → wrapper
    groups: dict[str, OperatorGroup] = field(default_factory=dict)  # "attn" / "ffn" → operator


def _group(cfg: ApexConfig, n: int, like: torch.Tensor, gen: torch.Generator) -> OperatorGroup | None:
    mixer = make_mixer(cfg.operator, n, cfg.init, cfg.init_scale, gen, like.device, like.dtype)
    return None if mixer is None else OperatorGroup(n, mixer, like.device, like.dtype)


def _attention(arch: Arch, i: int, plan: UnitPlan, cfg: ApexConfig, gen: torch.Generator,
               ops: LayerOps) -> None:
    d_h, rep = arch.head_dim, arch.rep
    if plan.tuned == 0:
        return
    v, o = arch.proj(i, "v"), arch.proj(i, "o")
    shared = _group(cfg, plan.k * d_h, v.weight, gen) if plan.k > 0 else None
    if shared is not None:
        ops.groups["attn"] = shared
    if shared is not None or cfg.use_s2:
        ops.wrappers["v"] = ColumnWrapper(v, plan.tuned * d_h, plan.k * d_h, shared, cfg.use_s2,
                                          cfg.mix_channels)
        ops.wrappers["o"] = RowWrapper(o, plan.tuned * rep * d_h, plan.k, rep, d_h, shared, cfg.use_s2,
                                       cfg.mix_channels)
    if cfg.finetune_qk and cfg.use_s2:
        ops.wrappers["q"] = ColumnWrapper(arch.proj(i, "q"), plan.tuned * rep * d_h, 0, None, True)
        ops.wrappers["k"] = ColumnWrapper(arch.proj(i, "k"), plan.tuned * d_h, 0, None, True)


def _ffn(arch: Arch, i: int, plan: UnitPlan, cfg: ApexConfig, gen: torch.Generator, ops: LayerOps) -> None:
    if plan.tuned == 0:
        return
    shared = _group(cfg, plan.k, arch.proj(i, "up").weight, gen) if plan.k > 0 else None
    if shared is not None:
        ops.groups["ffn"] = shared
    if shared is None and not cfg.use_s2:
        return
    for name in ("up", "gate"):
        ops.wrappers[name] = ColumnWrapper(arch.proj(i, name), plan.tuned, plan.k, shared, cfg.use_s2,
                                           cfg.mix_channels)
    ops.wrappers["down"] = RowWrapper(arch.proj(i, "down"), plan.tuned, plan.k, 1, 1, shared, cfg.use_s2,
                                      cfg.mix_channels)


def wrap_layer(arch: Arch, i: int, attn: UnitPlan, ffn: UnitPlan, cfg: ApexConfig,
               gen: torch.Generator) -> LayerOps:
    """Build layer i's wrappers and put them into the model; return them."""
    ops = LayerOps()
    _attention(arch, i, attn, cfg, gen, ops)
    _ffn(arch, i, ffn, cfg, gen, ops)
    for name, wrapper in ops.wrappers.items():
        arch.set_proj(i, name, wrapper)
    return ops


def plain_linear(wrapper: ExpandedLinear) -> nn.Linear:
    """An nn.Linear holding the wrapper's own weight/bias Parameter objects (no allocation)."""
    w = wrapper.weight
    lin = nn.Linear(w.shape[1], w.shape[0], bias=wrapper.bias is not None, device="meta", dtype=w.dtype)
    lin.weight = w
    if wrapper.bias is not None:
        lin.bias = wrapper.bias
    return lin


def unwrap_layer(arch: Arch, i: int, ops: LayerOps) -> None:
    """Replace layer i's wrappers by plain nn.Linear modules with the same Parameters (after a fold)."""
    for name, wrapper in ops.wrappers.items():
        arch.set_proj(i, name, plain_linear(wrapper))


def operator_params(all_ops: list[LayerOps]) -> dict[str, list[nn.Parameter]]:
    """Deduplicated operator parameters by role: "s2", "vec_scale" (vec and scales), "mixer" (factors)."""
    seen: set[int] = set()
    out: dict[str, list[nn.Parameter]] = {"s2": [], "vec_scale": [], "mixer": []}

    def add(role: str, p: nn.Parameter | None) -> None:
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            out[role].append(p)

    for ops in all_ops:
        for group in ops.groups.values():
            for p in group.mixer.parameters():
                add("mixer", p)
            add("vec_scale", group.mixer_vec)
        for wrapper in ops.wrappers.values():
            add("vec_scale", getattr(wrapper, "mixer_scale", None))
            add("s2", wrapper.s2)
    return out


def set_trainable(model: nn.Module, cfg: ApexConfig, op_params: list[nn.Parameter]) -> None:
    """requires_grad per §5: operators train; the base trains only when base_trainable (CPT), else only
    embeddings/lm_head when train_embeddings (norms stay frozen, as in the official script)."""
    ops = {id(p) for p in op_params}
    emb: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        mod = getattr(model, getter, lambda: None)()
        if mod is not None:
            emb.update(id(p) for p in mod.parameters())
    for p in model.parameters():
        if id(p) in ops:
            p.requires_grad_(True)
        else:
            p.requires_grad_(cfg.base_trainable or (cfg.train_embeddings and id(p) in emb))
