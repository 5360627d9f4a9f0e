"""Function-preserving permutation of heads (by KV group) and FFN channels (method §2).

The new layout is order = N ++ P ++ E ++ rest. Attention is equivariant to permuting whole KV groups
(a group = one k/v head and its rep q heads; RoPE is the same for every head) and the FFN to permuting
channels, so permuting these blocks consistently leaves the model's function unchanged:
  q rows and bias: blocks of rep·d_h;  k, v rows and biases: blocks of d_h;  o columns: blocks of rep·d_h;
  gate, up rows (and biases): blocks of 1;  down columns: blocks of 1.
Parameters are permuted in place (`param.data`), so the optimizer keeps its references (pitfall 2);
the same `PermSpec` applies to the optimizer's exp_avg / exp_avg_sq.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from apexlm.apex.arch import Arch


@dataclass
class PermSpec:
    """Permute `param` along `dim` (0 rows / 1 columns) in blocks of `block` elements by `order`.

    After applying, block j holds the old block order[j].
    """

    param: nn.Parameter
    dim: int
    block: int
    order: torch.Tensor  # (n_units,) long, CPU


def apply_perm(t: torch.Tensor, spec: PermSpec) -> None:
    """Permute tensor `t` (the param's data or a same-shaped optimizer state) in place."""
    n = spec.order.numel()
    idx = spec.order.to(t.device)
    with torch.no_grad():
        if spec.dim == 0:
            view = t.reshape(n, spec.block, *t.shape[1:])            # (n, block, …)
            t.copy_(view.index_select(0, idx).reshape(t.shape))
        else:
            view = t.reshape(t.shape[0], n, spec.block)              # (rows, n, block)
            t.copy_(view.index_select(1, idx).reshape(t.shape))


def _is_identity(order: torch.Tensor) -> bool:
    return bool(torch.equal(order, torch.arange(order.numel())))


def attention_specs(arch: Arch, i: int, order: torch.Tensor) -> list[PermSpec]:
    """PermSpecs moving whole KV groups of layer i (q/k/v rows, biases, o columns)."""
    if _is_identity(order):
        return []
    qb, kb = arch.rep * arch.head_dim, arch.head_dim
    specs: list[PermSpec] = []
    for name, block in (("q", qb), ("k", kb), ("v", kb)):
        mod = arch.proj(i, name)
        specs.append(PermSpec(mod.weight, 0, block, order))
        if getattr(mod, "bias", None) is not None:
            specs.append(PermSpec(mod.bias, 0, block, order))
    specs.append(PermSpec(arch.proj(i, "o").weight, 1, qb, order))   # o bias is per output: unchanged
    return specs


def ffn_specs(arch: Arch, i: int, order: torch.Tensor) -> list[PermSpec]:
    """PermSpecs moving FFN channels of layer i (gate/up rows and biases, down columns)."""
    if _is_identity(order):
        return []
    specs: list[PermSpec] = []
    for name in ("gate", "up"):
        mod = arch.proj(i, name)
        specs.append(PermSpec(mod.weight, 0, 1, order))
        if getattr(mod, "bias", None) is not None:
            specs.append(PermSpec(mod.bias, 0, 1, order))
    specs.append(PermSpec(arch.proj(i, "down").weight, 1, 1, order))
    return specs


def permute_params(specs: list[PermSpec]) -> None:
    """Apply every spec to its parameter's data, in place."""
    for spec in specs:
        apply_perm(spec.param.data, spec)


def permute_optimizer_state(optimizer: torch.optim.Optimizer, specs: list[PermSpec]) -> None:
    """Permute each param's optimizer state tensors of the param's shape (Adam's moments) like the param.

    Element-wise Adam state commutes with a permutation, so training continues as if nothing moved.
    """
    for spec in specs:
        state = optimizer.state.get(spec.param)
        if not state:
            continue
        for value in state.values():
            if torch.is_tensor(value) and value.shape == spec.param.shape:
                apply_perm(value, spec)
