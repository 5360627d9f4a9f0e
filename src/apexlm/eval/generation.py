"""Greedy generation in left-padded batches, identical to one prompt at a time.

Decoder-only models continue from the last position, so prompts are padded on the LEFT and the attention
mask marks the pads; transformers' generate derives position ids from that mask (cumsum − 1), so a padded
prompt sees exactly the positions and keys it would see alone (tested: batch size 1 vs 8 give the same
tokens). Greedy (do_sample=False) with a fresh GenerationConfig, so model-specific sampling defaults or
penalties never leak in. A sequence stops at eos or at any other special token (role markers of the chat
template), and the text after the first stop token is discarded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import GenerationConfig


def stop_token_ids(tokenizer) -> list[int]:
    """eos first, then every other special token except pad (a chat model's turn markers end an answer)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for tid in getattr(tokenizer, "all_special_ids", []):
        if tid not in ids and tid != tokenizer.pad_token_id:
            ids.append(tid)
    return ids


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, T), attention_mask (B, T)) with each prompt right-aligned after pad tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)       # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)             # (B, T)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
    return ids, mask


def fit_context(prompt: Sequence[int], max_new_tokens: int, context: int | None) -> tuple[list[int], bool]:
    """Keep the prompt's last tokens so that prompt + answer fit the model's context; (ids, truncated)."""
    if context is None or len(prompt) + max_new_tokens <= context:
        return list(prompt), False
    keep = max(1, context - max_new_tokens)
    return list(prompt[-keep:]), True


def cut_at_stop(ids: Sequence[int], stops: Sequence[int]) -> list[int]:
    """Tokens before the first stop token."""
    out = []
    for tid in ids:
        if tid in stops:
            break
        out.append(int(tid))
    return out


@torch.no_grad()
def greedy_generate(model: nn.Module, tokenizer, prompts: Sequence[Sequence[int]], batch_size: int,
                    max_new_tokens: int) -> list[list[int]]:
    """New token ids (before the first stop token) for every prompt, in the prompts' order.

    Prompts are batched by length (longest first) to waste little on padding; outputs do not depend on the
    batching. Eval mode; the training flag is restored afterwards.
    """
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, use_cache=True,
                               pad_token_id=pad_id, eos_token_id=stops or None)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = left_pad([prompts[i] for i in rows], pad_id)
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  generation_config=gen_cfg)                    # (B, T + new)
            for row, i in enumerate(rows):
                out[i] = cut_at_stop(seqs[row, ids.shape[1]:].tolist(), stops)
    finally:
        model.train(was_training)
    return out
