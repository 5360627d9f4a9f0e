"""Tiny random HF models and comparison helpers for the APEX tests (float32, CPU)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 97


def llama(hidden: int = 64, layers: int = 2, heads: int = 4, kv: int = 4, ffn: int = 97, bias: bool = False,
          seed: int = 0) -> LlamaForCausalLM:
    """A random LlamaForCausalLM in eval mode (dropout-free)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=ffn, vocab_size=VOCAB, attention_bias=bias,
                      mlp_bias=bias, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def qwen2(hidden: int = 64, layers: int = 2, heads: int = 4, kv: int = 2, ffn: int = 89,
          seed: int = 0) -> Qwen2ForCausalLM:
    """A random Qwen2 model (q/k/v biases, o without) in eval mode."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=ffn, vocab_size=VOCAB,
                      max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():                               # make the biases matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def batch(b: int = 2, t: int = 9, pad: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """input_ids and an attention_mask with `pad` left-padding positions in the last row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[-1, :pad] = 0
    return {"input_ids": ids, "attention_mask": mask}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ‖a − b‖ / ‖a‖."""
    return ((a - b).norm() / a.norm()).item()


def perturb(params: list[torch.nn.Parameter], scale: float = 0.1, seed: int = 5) -> None:
    """Move every operator parameter away from its identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)
