"""Parameter counting shared by APEX's summaries, the budget dry-runs and every method's report.

Kept apart from `budget` (which builds an `Apex`) so that `core` can count without importing it back.
"""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor (tied embeddings, shared operators) once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
