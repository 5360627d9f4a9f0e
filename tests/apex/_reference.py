"""Hand-computed score references (method §1) from activations captured by the test's own hooks."""

from __future__ import annotations

import torch


class Capture:
    """Records every layer's act_fn output and o_proj input for each forward (a list per layer)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.ffn: list[list[torch.Tensor]] = []
        self.attn: list[list[torch.Tensor]] = []
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            self.ffn.append([])
            self.attn.append([])
            self.handles.append(layer.mlp.act_fn.register_forward_hook(
                lambda m, a, out, i=i: self.ffn[i].append(out.detach().double().clone())))
            self.handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
                lambda m, a, i=i: self.attn[i].append(a[0].detach().double().clone())))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def norms(x: torch.Tensor, mask: torch.Tensor | None, groups: int | None) -> torch.Tensor:
    """sqrt(Σ over valid positions (and a group's dims) of x²): (d,) for channels, (groups,) for heads."""
    b, t, d = x.shape
    keep = torch.ones(b, t, dtype=torch.bool) if mask is None else mask.bool()
    total = torch.zeros(d, dtype=torch.float64)
    for bi in range(b):
        for ti in range(t):
            if keep[bi, ti]:
                total += x[bi, ti] ** 2
    if groups is not None:
        total = total.reshape(groups, -1).sum(1)
    return total.sqrt()


def rank_update(a: torch.Tensor, k: int) -> torch.Tensor:
    """top-k indicator minus min-k indicator."""
    out = torch.zeros_like(a)
    order = torch.argsort(a)
    out[order[-k:]] += 1
    out[order[:k]] -= 1
    return out
