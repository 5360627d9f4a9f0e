"""Build the causal LM a run trains: a tiny LLaMA from a config, a HF hub id / local dir, or SmolLM2 from GGUF.

All builders return a float32 `PreTrainedModel` of the LLaMA family plus its tokenizer; precision is the
trainer's business (bf16-mixed autocast), so function-preservation checks always see float32 weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from apexlm.errors import ModelError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
TINY_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "max_position_embeddings", "rope_theta", "tie_word_embeddings")


def _looks_local(ref: str) -> bool:
    """Paths start with / . ~ or have more than one slash; `org/name` is a hub id."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1


def check_supported(config: Any) -> None:
    """Stop early for models without LLaMA-style q/k/v/o + gate/up/down projections."""
    mt = getattr(config, "model_type", "?")
    if mt not in SUPPORTED:
        raise ModelError(
            f"model_type '{mt}' is not supported; use a LLaMA-family causal LM ({', '.join(SUPPORTED)}; "
            "e.g. Llama-2/3, TinyLlama, SmolLM2, Mistral, Qwen2)"
        )


def tiny_config(cfg: Mapping[str, Any], vocab_size: int, pad_id: int | None, bos_id: int | None,
                eos_id: int | None) -> LlamaConfig:
    kw = {k: cfg[k] for k in TINY_KEYS if cfg.get(k) is not None}
    if kw["hidden_size"] % kw["num_attention_heads"]:
        raise ModelError(f"model.hidden_size={kw['hidden_size']} is not divisible by "
                         f"model.num_attention_heads={kw['num_attention_heads']}")
    if kw["num_attention_heads"] % kw.get("num_key_value_heads", kw["num_attention_heads"]):
        raise ModelError("model.num_attention_heads must be a multiple of model.num_key_value_heads")
    return LlamaConfig(vocab_size=vocab_size, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
                       attention_dropout=0.0, **kw)


def _load_pretrained(ref: str, cfg: Mapping[str, Any]) -> PreTrainedModel:
    ref = os.path.expanduser(ref)
    if _looks_local(ref) and not Path(ref).exists():
        raise ModelError(f"model.pretrained={ref} does not exist; give an existing local model dir or a hub id")
    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as e:
        hint = " (run `make base` to build the tiny base)" if "tiny" in ref else ""
        raise ModelError(f"cannot load model.pretrained={ref}: {str(e).splitlines()[0]}{hint}") from None
    check_supported(config)
    return AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32)


def build_model(cfg: Mapping[str, Any], tokenizer: Any) -> PreTrainedModel:
    """Model from the `model` config group. kind: tiny | hf | gguf."""
    kind = cfg.get("kind", "hf")
    pretrained = cfg.get("pretrained")
    if kind == "gguf":
        from apexlm.models.gguf import load_gguf_model

        model = load_gguf_model(cfg)
    elif pretrained:
        model = _load_pretrained(str(pretrained), cfg)
    elif kind == "tiny":
        model = LlamaForCausalLM(tiny_config(cfg, len(tokenizer), tokenizer.pad_token_id,
                                             tokenizer.bos_token_id, tokenizer.eos_token_id))
    else:
        raise ModelError("model.pretrained is empty; set model.pretrained=<hub id or local dir>")
    check_supported(model.config)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ModelError(
            f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{model.get_input_embeddings().num_embeddings}; use the model's own tokenizer (model.tokenizer=null)"
        )
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model.float()
