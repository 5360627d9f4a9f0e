"""Micro LLaMA and a tiny torch training loop that drives a method exactly as the Lightning module does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from apexlm.methods.base import Method

VOCAB = 101


def micro_config() -> LlamaConfig:
    """2 layers, GQA (4 q heads, 2 kv heads), FFN width 96: small enough for a seconds-long test."""
    return LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96, vocab_size=VOCAB, max_position_embeddings=64)


def micro_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(micro_config()).float()


def batches(n: int, seed: int = 1, batch: int = 2, length: int = 12) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0  # some right padding
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loop's call: keyword inputs, use_cache=False, `.logits`."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = logits(model, batch)[:, :-1]
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


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
