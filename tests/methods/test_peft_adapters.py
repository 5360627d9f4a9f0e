"""LoRA / DoRA / PiSSA through peft: only adapters train, merging is exact, meta models count right."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from apexlm.errors import ConfigError
from apexlm.methods import build_method
from apexlm.methods.peft_adapters import LLAMA_LINEARS, PeftAdapterMethod
from tests.support.loop import loop_logits, train_steps
from tests.support.models import batches, micro_config, micro_model, relative_max_diff, snapshot

ADAPTER_KEYS = ("lora_A", "lora_B", "lora_magnitude_vector")


def _cfg(name: str, **kw: object) -> dict:
    return {"name": name, "stages": 1, "r": 4, "alpha": 8, "dropout": 0.0, **kw}


@pytest.mark.parametrize("name", ["lora", "dora", "pissa"])
def test_only_adapters_train_and_merge_is_exact(name: str) -> None:
    base = micro_model()
    original_keys = list(base.state_dict())
    data = batches(4)
    before = loop_logits(base.eval(), data[0]).detach()
    method = build_method(_cfg(name))
    model = method.prepare(base)
    if name == "pissa":  # the residual + principal adapter start as the original weight
        assert relative_max_diff(loop_logits(model.eval(), data[0]), before) < 1e-4
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(any(k in n for k in ADAPTER_KEYS) for n in trainable)
    frozen_before = {n: t for n, t in snapshot(model).items() if not any(k in n for k in ADAPTER_KEYS)}
    adapters_before = {n: t for n, t in snapshot(model).items() if any(k in n for k in ADAPTER_KEYS)}

    opt = torch.optim.AdamW(method.param_groups(model, 1e-2, 0.0))
    train_steps(model, method, opt, data[:3])

    after = snapshot(model)
    assert all(torch.equal(after[n], t) for n, t in frozen_before.items()), "a base weight moved"
    assert sum(not torch.equal(after[n], t) for n, t in adapters_before.items()) > len(adapters_before) // 2
    adapter_logits = loop_logits(model.eval(), data[3]).detach()
    assert relative_max_diff(adapter_logits, before) > 1e-4  # training did change the function

    merged = method.finalize(model)
    assert type(merged) is LlamaForCausalLM
    assert list(merged.state_dict()) == original_keys
    fresh = LlamaForCausalLM(micro_config()).float()
    fresh.load_state_dict(merged.state_dict(), strict=True)
    assert relative_max_diff(loop_logits(fresh.eval(), data[3]).detach(), adapter_logits) < 1e-5
    summary = method.summary(merged)
    assert summary["trainable_params"] == sum(t.numel() for t in adapters_before.values())
    assert summary["total_params"] == sum(p.numel() for p in fresh.parameters())


def _lora_count(r: int) -> int:
    """Analytic LoRA size on the micro model: r * (in + out) per targeted linear."""
    c = micro_config()
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    h, f = c.hidden_size, c.intermediate_size
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, f), (h, f), (f, h)]  # (in, out) of q,k,v,o,gate,up,down
    return c.num_hidden_layers * sum(r * (i + o) for i, o in shapes)


@pytest.mark.parametrize("name", ["lora", "pissa", "dora"])
def test_meta_model_budget(name: str) -> None:
    with torch.device("meta"):
        base = LlamaForCausalLM(micro_config())
    method = build_method(_cfg(name, r=8))
    model = method.prepare(base)
    summary = method.summary(model)
    dora_extra = 0
    if name == "dora":  # one magnitude per output feature of each targeted linear
        c = micro_config()
        kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
        dora_extra = c.num_hidden_layers * (3 * c.hidden_size + 2 * kv + 2 * c.intermediate_size)
    assert summary["trainable_params"] == _lora_count(8) + dora_extra
    assert summary["total_params"] == sum(p.numel() for p in micro_model().parameters())


def test_alpha_defaults_to_twice_r_and_targets_default_to_all_linears() -> None:
    method = PeftAdapterMethod({"name": "lora", "r": 8})
    assert method.alpha == 16.0 and tuple(method.target_modules) == LLAMA_LINEARS
    assert PeftAdapterMethod({"name": "dora"}).use_dora
    assert PeftAdapterMethod({"name": "pissa"}).init_lora_weights == "pissa_niter_4"


def test_train_embeddings_and_bad_targets() -> None:
    method = build_method(_cfg("lora", train_embeddings=True))
    model = method.prepare(micro_model())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("embed_tokens" in n for n in names) and any("lm_head" in n for n in names)
    with pytest.raises(ConfigError, match="target_modules"):
        build_method(_cfg("lora", target_modules=["qproj"])).prepare(micro_model())
    with pytest.raises(ConfigError, match="method.r"):
        build_method(_cfg("lora", r=0))
