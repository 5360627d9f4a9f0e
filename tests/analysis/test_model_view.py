"""Weights as the model applies them (APEX wrappers, peft adapters) and the base mapped through APEX's permutation."""

from __future__ import annotations

import copy

import pytest
import torch

from apexlm.analysis.activations import activation_magnitudes, distribution_stats
from apexlm.analysis.model_view import geometry, layer_weights, to_layout, to_original
from apexlm.apex import Apex, ApexConfig
from tests.support.models import batch, llama


def _max_diff(a: dict[str, list[torch.Tensor]], b: dict[str, list[torch.Tensor]]) -> float:
    return max(float((x - y).abs().max()) for k in a for x, y in zip(a[k], b[k], strict=True))


def _random_scores(model: torch.nn.Module, seed: int = 3) -> dict[str, list[torch.Tensor]]:
    geo = geometry(model)
    g = torch.Generator().manual_seed(seed)
    return {"attn": [torch.randn(geo.n_kv, generator=g) for _ in range(geo.n_layers)],
            "ffn": [torch.randn(geo.d_ff, generator=g) for _ in range(geo.n_layers)]}


def test_base_mapped_through_apex_permutation_matches_the_expanded_model() -> None:
    """GQA model, CPT-style APEX: after expand (permute + wrap, function-preserving), W_base mapped through
    Apex.unit_ids equals the weights the wrapped model applies, so ΔW is exactly zero; unmapped it is not."""
    model = llama(hidden=64, heads=4, kv=2, ffn=96, layers=2)
    base = layer_weights(model)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_attn_ratio=None, tuned_ffn_ratio=None, base_trainable=True))
    apex.expand(_random_scores(model))
    cur = layer_weights(model)
    geo = geometry(model)
    assert _max_diff(cur, to_layout(base, apex.unit_ids, geo)) < 1e-6
    assert _max_diff(cur, base) > 1e-3                      # the layout really was permuted
    assert _max_diff(to_original(cur, apex.unit_ids, geo), base) < 1e-6


def test_activation_spread_is_invariant_to_apex_expansion() -> None:
    model = llama(hidden=64, heads=4, kv=2, ffn=96, layers=2)
    batches = [batch(b=3, t=11, pad=4)]
    before = distribution_stats(activation_magnitudes(model, batches))
    Apex(model, ApexConfig(k_ratio=0.25, tuned_attn_ratio=None, tuned_ffn_ratio=None,
                      base_trainable=True)).expand(_random_scores(model))
    after = distribution_stats(activation_magnitudes(model, batches))
    for kind in ("attn", "ffn"):
        assert after[kind]["std"] == pytest.approx(before[kind]["std"], abs=1e-5)


def test_peft_weights_are_the_merged_weights() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(llama(hidden=32, heads=4, kv=2, ffn=48),
                                peft.LoraConfig(r=4, target_modules=["v_proj", "o_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    seen = layer_weights(model)
    merged = layer_weights(copy.deepcopy(model).merge_and_unload())
    assert _max_diff(seen, merged) < 1e-5
    raw = {"v": [layer.self_attn.v_proj.get_base_layer().weight for layer in model.get_base_model().model.layers]}
    assert _max_diff({"v": seen["v"]}, raw) > 1e-3          # the adapters really changed the applied weight
