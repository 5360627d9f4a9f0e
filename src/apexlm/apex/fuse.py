"""Folding operators back into the dense weights (method §4), exactly and in float32.

fold: every wrapper's effective weight (and bias: the official fuse forgot the column-side bias) is
computed in float32 and copied into its own base Parameter, for all members of a layer BEFORE the shared
operator is reset (pitfall 8); then s2 = 0, vec = scale = 1, M back to its init. The wrappers then
compute exactly the folded weights, so the model's function is unchanged (up to float32 rounding).
No bf16 cast of M (the official code's cast costs 2e-5 to 4e-3 relative error).
"""

from __future__ import annotations

import torch

from apexlm.apex.arch import Arch
from apexlm.apex.layer_ops import LayerOps, unwrap_layer


@torch.no_grad()
def fold_layer(ops: LayerOps, gen: torch.Generator | None) -> None:
    """Write layer's effective weights into the base Parameters, then reset its operators to identity."""
    folded = {name: w.effective(torch.float32) for name, w in ops.wrappers.items()}   # all before reset
    for name, (weight, bias) in folded.items():
        wrapper = ops.wrappers[name]
        wrapper.weight.data.copy_(weight.to(wrapper.weight.dtype))
        if bias is not None and wrapper.bias is not None:
            wrapper.bias.data.copy_(bias.to(wrapper.bias.dtype))
    for wrapper in ops.wrappers.values():
        wrapper.reset_own_()
    for group in ops.groups.values():
        group.reset_(gen)


def fold_all(all_ops: list[LayerOps], gen: torch.Generator | None) -> None:
    """fold_layer for every layer."""
    for ops in all_ops:
        fold_layer(ops, gen)


def fuse_all(arch: Arch, all_ops: list[LayerOps], gen: torch.Generator | None) -> None:
    """Fold, then put plain nn.Linear modules (same Parameter objects) back: a plain HF model again."""
    fold_all(all_ops, gen)
    for i, ops in enumerate(all_ops):
        unwrap_layer(arch, i, ops)
