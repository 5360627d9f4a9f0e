"""Meta-device budget dry-runs (method §5) and parameter counting."""

import pytest
import torch
from transformers import LlamaConfig

from apexlm.apex import Apex, ApexConfig, apex_budget, count_params
from tests.support.models import llama

LLAMA2_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=32000)


def test_llama2_7b_paper_setting_is_52_percent():
    """§5: s2 on 18/32 heads (q, k, v, o) and 5118/11008 channels + embeddings/lm_head + operators."""
    cfg = ApexConfig(k_ratio=0.1875, tuned_attn_ratio=0.5625, tuned_ffn_ratio=0.465, finetune_qk=True,
                     train_embeddings=True)
    out = apex_budget(LlamaConfig(**LLAMA2_7B), cfg)
    s2 = 32 * (4 * 2304 * 4096 + 3 * 5118 * 4096)
    emb = 2 * 32000 * 4096
    mixers = 32 * ((2 * 768 * 32 + 2 * 768) + (2 * 2064 * 48 + 3 * 2064))   # Monarch + vec/scales
    assert out["trainable"] == s2 + emb + mixers
    assert out["total"] == 6_738_415_616
    assert out["fraction"] == pytest.approx(0.518, abs=0.005)


def test_low_budget_matches_lora_r64():
    """The "2.4 %" regime: low-budget heads (§2), no embeddings, ≈ LoRA r=64 on all seven linears."""
    d, f, layers, r = 4096, 11008, 32, 64
    lora = layers * r * (4 * (d + d) + 2 * (d + f) + (f + d))
    cfg = ApexConfig(k_ratio=0.0125, tuned_attn_ratio=None, tuned_ffn_ratio=None, train_embeddings=False)
    out = apex_budget(LlamaConfig(**LLAMA2_7B), cfg)
    assert lora / out["total"] == pytest.approx(0.0237, abs=5e-4)
    assert out["fraction"] == pytest.approx(0.024, abs=1e-3)
    assert abs(out["trainable"] - lora) / lora < 0.01


def test_meta_expand_allocates_nothing_and_counts():
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=97, vocab_size=97)
    from transformers import LlamaForCausalLM
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    apex = Apex(model, ApexConfig(k_ratio=0.5, tuned_attn_ratio=None, tuned_ffn_ratio=None))
    apex.expand()
    apex.restage()
    assert all(p.is_meta for p in model.parameters())
    s = apex.summary()
    assert s["trainable"] > 0 and s["total"] == sum(p.numel() for p in llama(64, 2, 4, 2, 97).parameters())
    apex.fuse()


def test_count_params_deduplicates_shared_tensors():
    model = llama(64, 2, 4, 4, 97)
    model.lm_head.weight = model.model.embed_tokens.weight        # tie
    t, n = count_params(model)
    assert n == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_attn_ratio=None, tuned_ffn_ratio=None))
    apex.expand()
    shared = model.model.layers[0].self_attn.v_proj.shared
    assert shared is model.model.layers[0].self_attn.o_proj.shared
    t2, n2 = count_params(model)
    assert n2 - n == sum(p.numel() for p in apex.operator_parameters())


@pytest.mark.parametrize("model", ["tiny", pytest.param("llama2_7b", marks=pytest.mark.slow)])
def test_matched_budget_pairs_agree_within_ten_percent(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m apexlm.budget --pairs`: APEX vs HFT, and low-budget APEX vs LoRA at the solved rank."""
    from apexlm.budget import main

    assert main(["--pairs", f"model={model}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    match = {ln.split("=")[0]: float(ln.split("=")[1]) for ln in lines if ln.startswith("pair_match[")}
    assert match["pair_match[half]"] >= 0.9
    low_r = [v for k, v in match.items() if k.startswith("pair_match[low_r")]
    assert len(low_r) == 1 and low_r[0] >= 0.9
    if model == "tiny":  # the configured lora_it (r=16) is already the low-budget APEX's twin here
        assert match["pair_match[low]"] >= 0.9
    full = next(ln for ln in lines if "experiment=full_it" in ln)
    assert full.split()[3] == "1.0000"


@pytest.mark.slow  # every method's budget of a 7B model
def test_budget_all_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from apexlm.budget import ROOT, main

    assert main(["--all", "model=llama2_7b"]) == 0
    out = capsys.readouterr().out
    for cfg in (Path(ROOT) / "configs" / "method").glob("*.yaml"):
        assert f"\n{cfg.stem} " in f"\n{out}"
    assert "trainable_fraction=0.5180" in out  # apex, the paper's 52 %
