"""Token-weighted perplexity of a split: exp(Σ token losses / Σ tokens), accumulated in float64.

The same loss as training (`apexlm.models.module.token_loss_sum`: next-token cross-entropy over labels
!= -100), so an exported model evaluated on the run's val loader reproduces the run's final val/ppl. It is
the perplexity of the split, not a mean of per-batch perplexities (batches with more tokens weigh more).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.models.module import token_loss_sum


@torch.no_grad()
def split_perplexity(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                     max_batches: int | None = None) -> dict[str, Any]:
    """{"loss", "ppl", "tokens", "batches"} over the first `max_batches` batches (all when None).

    Batches hold (B, T) `input_ids`, optional `attention_mask` (ones when absent) and `labels` (the input
    ids when absent). Eval mode; the training flag is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    n = 0
    try:
        for batch in batches:
            if max_batches is not None and n >= max_batches:
                break
            ids = batch["input_ids"].to(device)                                   # (B, T)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask.to(device)      # (B, T)
            labels = batch.get("labels")
            labels = ids if labels is None else labels.to(device)                 # (B, T)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits   # (B, T, V)
            loss_sum, tokens = token_loss_sum(logits, labels)
            total += loss_sum.double().cpu()
            count += int(tokens)
            n += 1
    finally:
        model.train(was_training)
    loss = float(total / max(count, 1))
    return {"loss": loss, "ppl": math.exp(min(loss, 30.0)) if count else float("nan"), "tokens": count,
            "batches": n}
