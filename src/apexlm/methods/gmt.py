"""Gradient-Mask Tuning (GMT, Li et al. 2024) behind the method contract.

Every parameter trains and sits in the optimizer (as full fine-tuning). Before each optimizer step, per
parameter tensor, the gradient entries whose magnitude is at or below the `mask_ratio` quantile of that
tensor's |grad| are zeroed, so only the largest (1 - mask_ratio) share of entries gets a gradient
(default 0.4: 60 % of the entries). The hook runs once per optimizer step, on the accumulated gradient,
after DDP's all-reduce (so every rank masks the same entries).

Order with gradient clipping: in Lightning 2.6 `on_before_optimizer_step` runs before clipping
(`Precision._after_closure`: hooks first, then `_clip_gradients`), so the mask is chosen on unclipped
gradients and the clip then sees the masked gradient, i.e. the update that is actually applied. Choosing the
mask after clipping would give the same entries: norm clipping scales a whole tensor by one positive factor
and value clipping is monotone, neither changes the ranking of |grad| (value clipping can only create ties).

With Adam(W) a masked entry still moves by its momentum and by weight decay: GMT masks the gradient fed to
the optimizer, not the update. Under FSDP the quantile would be per shard; DeepSpeed keeps gradients in its
own buffers, which this hook does not see.

The quantile threshold is exact. torch.quantile refuses large tensors, so it is the k-th smallest |grad|:
`torch.kthvalue` on CPU; on accelerators a 31-step bisection on the float bit pattern (non-negative floats
order like their int32 bits), each step a count over the tensor, with no host synchronisation. (CUDA's
kthvalue works one slice per thread block, which a single multi-million-entry tensor makes slow; the GPU
speed of either path has not been benchmarked yet.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.errors import ConfigError
from apexlm.methods.base import Method


def kth_smallest_bisect(a: torch.Tensor, k: int) -> torch.Tensor:
    """k-th smallest (1-based) of a non-negative float32 tensor by bisection on its bits; exact, any device.

    31 counting passes over the tensor, all on the device (no host synchronisation). Returns a 0-dim float32.
    """
    bits = a.reshape(-1).view(torch.int32)  # order-preserving for non-negative floats
    lo = torch.zeros((), dtype=torch.int64, device=a.device)
    hi = torch.full((), 0x7FFFFFFF, dtype=torch.int64, device=a.device)
    for _ in range(31):  # invariant: the answer's bit pattern lies in [lo, hi]
        mid = (lo + hi) // 2
        enough = (bits <= mid).sum() >= k
        hi = torch.where(enough, mid, hi)
        lo = torch.where(enough, lo, mid + 1)
    return hi.to(torch.int32).view(torch.float32)


def kth_smallest(a: torch.Tensor, k: int) -> torch.Tensor:
    """k-th smallest (1-based) of a non-negative float32 tensor: kthvalue on CPU, bisection elsewhere."""
    if a.device.type == "cpu":
        return torch.kthvalue(a.reshape(-1), k).values
    return kth_smallest_bisect(a, k)


@torch.no_grad()
def mask_small_gradients(grad: torch.Tensor, ratio: float) -> torch.Tensor | int:
    """Zero, in place, the entries of `grad` with |g| <= its `ratio` quantile; returns how many were masked.

    The count is a 0-dim tensor on the gradient's device (read it once per step, not once per tensor).
    """
    n = grad.numel()
    k = int(round(ratio * n))
    if k <= 0:
        return 0
    if k >= n:
        grad.zero_()
        return n
    a = grad.detach().abs().float()  # same shape as the parameter
    threshold = kth_smallest(a, k)
    mask = a <= threshold  # ties at the threshold are masked too
    grad.masked_fill_(mask, 0)
    return mask.sum()


class GmtMethod(Method):
    """Full fine-tuning with a per-tensor gradient magnitude mask before every optimizer step."""

    name = "gmt"
    edits_gradients = True  # masks p.grad before each step: ZeRO keeps gradients in its own buffers

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.mask_ratio = float(cfg.get("mask_ratio", 0.4))
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"method.mask_ratio={self.mask_ratio} must be in [0, 1) (the share of gradient "
                              "entries zeroed per tensor)")
        self.steps = 0
        self.masked_total = 0  # entries masked over all steps (for the realised fraction)
        self.entries_total = 0
        self.last_fraction = 0.0

    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Every parameter trains (the mask, not the parameter set, limits the update)."""
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def on_before_optimizer_step(self, model: nn.Module) -> None:
        """Mask each parameter's gradient to its top (1 - mask_ratio) entries by magnitude."""
        counts: list[torch.Tensor | int] = []
        entries = 0
        for p in {id(p): p for p in model.parameters()}.values():
            if p.grad is None:
                continue
            counts.append(mask_small_gradients(p.grad, self.mask_ratio))
            entries += p.grad.numel()
        masked = sum(int(c) for c in counts)
        self.steps += 1
        self.masked_total += masked
        self.entries_total += entries
        self.last_fraction = masked / max(entries, 1)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """Parameter counts plus the realised mask fraction (mean over all steps, and the last step)."""
        out = super().summary(model)
        out.update({"gmt_mask_ratio": self.mask_ratio,
                    "gmt_mask_fraction": self.masked_total / max(self.entries_total, 1),
                    "gmt_mask_fraction_last": self.last_fraction, "gmt_masked_steps": self.steps})
        return out
