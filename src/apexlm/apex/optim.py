"""Optimizer parameter groups and per-stage optimizer-state resets (method §6, §7 "Optimizer groups").

Groups (no parameter twice; shared operators are counted once):
  base / base_no_decay: other trainables (embeddings, lm_head; every base weight in CPT mode), with weight
      decay except 1-D tensors (norm weights, biases);
  s2: the direct deltas, with weight decay (it pulls them toward 0 = no change);
  vec_scale: mixer_vec and mixer_scale, without weight decay (decay pulls them to 0, not to the identity 1,
      pitfall 7);
  mixer: Monarch / dense / diagonal factors at lr · mixer_lr_scale, with weight decay (toward M = 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_param_groups(model: nn.Module, roles: dict[str, list[nn.Parameter]], lr: float,
                       weight_decay: float, mixer_lr_scale: float) -> list[dict[str, Any]]:
    """Optimizer param groups (only trainable params; empty groups are left out)."""
    seen: set[int] = set()

    def take(params: list[nn.Parameter]) -> list[nn.Parameter]:
        out = []
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    mixer = take(roles["mixer"])
    vec_scale = take(roles["vec_scale"])
    s2 = take(roles["s2"])
    others = take(list(model.parameters()))
    groups = [
        {"name": "base", "params": [p for p in others if p.dim() >= 2], "lr": lr,
         "weight_decay": weight_decay},
        {"name": "base_no_decay", "params": [p for p in others if p.dim() < 2], "lr": lr,
         "weight_decay": 0.0},
        {"name": "s2", "params": s2, "lr": lr, "weight_decay": weight_decay},
        {"name": "vec_scale", "params": vec_scale, "lr": lr, "weight_decay": 0.0},
        {"name": "mixer", "params": mixer, "lr": lr * mixer_lr_scale, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


def reset_state(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> int:
    """Drop the optimizer state of `params` (fresh Adam moments, as the official optimizer rebuild).

    Returns how many parameters had state.
    """
    dropped = 0
    for p in params:
        if optimizer.state.pop(p, None) is not None:
            dropped += 1
    return dropped


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Every parameter the optimizer holds."""
    return [p for group in optimizer.param_groups for p in group["params"]]
