"""A tiny torch training loop that drives a method exactly as the Lightning module does (no Lightning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apexlm.methods.base import Method


def loop_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loop's call: keyword inputs, use_cache=False, `.logits` (b, t, vocab), with grad."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy over the unpadded positions."""
    out = loop_logits(model, batch)[:, :-1]
    labels = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    return F.cross_entropy(out.reshape(-1, out.size(-1)), labels.reshape(-1), ignore_index=-100)


def train_steps(model: nn.Module, method: Method, opt: torch.optim.Optimizer, data: list[dict]) -> None:
    """forward -> backward -> method.on_before_optimizer_step -> step -> zero_grad (set_to_none)."""
    model.train()
    for batch in data:
        loss_of(model, batch).backward()
        method.on_before_optimizer_step(model)
        opt.step()
        opt.zero_grad(set_to_none=True)
