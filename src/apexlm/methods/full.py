"""Full fine-tuning: every parameter trains. With `stage_restarts` it is the restart-only control:
same stage boundaries, LR restarts and optimizer resets as APEX, no operators."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from apexlm.methods.base import Method


class FullMethod(Method):
    name = "full"

    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
