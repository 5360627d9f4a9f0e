"""Micro HF models (MHA, GQA, biases) and batches for CPU tests (float32), plus comparison helpers.

`micro_config` is the standard micro shape (also behind the Hydra `MICRO` overrides in tests.support.runs);
`llama` and `qwen2` take every size as an argument for tests that need a particular layout.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 97  # vocabulary of llama()/qwen2()/batch()
MICRO_VOCAB = 101  # vocabulary of micro_config()/batches()
# The smallest model that still has GQA (4 q heads, 2 kv heads), several layers and an awkward FFN width.
MICRO_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "intermediate_size": 96}


def micro_config(vocab: int = MICRO_VOCAB, max_positions: int = 64) -> LlamaConfig:
    """The micro shape as a LlamaConfig: small enough for a seconds-long test."""
    return LlamaConfig(**MICRO_SHAPE, vocab_size=vocab, max_position_embeddings=max_positions)


def micro_model(seed: int = 0) -> LlamaForCausalLM:
    """A random micro LLaMA in float32 (train mode, as a freshly built model)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(micro_config()).float()


def llama(hidden: int = 64, layers: int = 2, heads: int = 4, kv: int = 4, ffn: int = 97, bias: bool = False,
          seed: int = 0) -> LlamaForCausalLM:
    """A random LlamaForCausalLM in eval mode (dropout-free); bias=True adds attention and MLP biases."""
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
    """input_ids (b, t) over VOCAB and an attention_mask with `pad` left-padding positions in the last row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[-1, :pad] = 0
    return {"input_ids": ids, "attention_mask": mask}


def batches(n: int, seed: int = 1, batch: int = 2, length: int = 12) -> list[dict[str, torch.Tensor]]:
    """n batches (batch, length) over MICRO_VOCAB; the first row of each ends in 3 right-padding positions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, MICRO_VOCAB, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(b, t, vocab) logits without grad."""
    with torch.no_grad():
        return model(**inputs).logits


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ‖a − b‖ / ‖a‖."""
    return ((a - b).norm() / a.norm()).item()


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every named parameter."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def perturb(params: list[torch.nn.Parameter], scale: float = 0.1, seed: int = 5) -> None:
    """Move every operator parameter away from its identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)
