"""Function preservation in float32 (method §2–§4): expand, perturb + fold/fuse, second stage, resume."""

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from tests.support.models import batch, llama, logits, perturb, qwen2, rel

TOL = 1e-5

def _r(k: float, attn: float | None, ffn: float | None, **kw) -> dict:
    return dict(k_ratio=k, tuned_attn_ratio=attn, tuned_ffn_ratio=ffn, **kw)


CASES = {
    "mha": (lambda: llama(64, 2, 4, 4, 97), _r(0.25, 0.75, 0.6)),
    "gqa_6_2": (lambda: llama(96, 2, 6, 2, 97), _r(0.5, None, 1.0)),
    "gqa_8_4": (lambda: llama(64, 2, 8, 4, 90), _r(0.25, 0.75, 0.5)),
    "llama_bias": (lambda: llama(64, 2, 4, 2, 60, bias=True), _r(0.5, None, None)),
    "qwen2_bias": (lambda: qwen2(), _r(0.5, None, None)),
    "low_budget": (lambda: llama(64, 3, 4, 4, 97), _r(0.1, 0.5, 0.3)),
    "k_rounds_to_1": (lambda: llama(64, 2, 4, 4, 97), _r(0.01, None, None)),
    "dense_op": (lambda: llama(64, 2, 4, 2, 97), _r(0.5, None, None, operator="dense")),
    "diagonal_op": (lambda: llama(64, 2, 4, 2, 97), _r(0.5, None, 1.0, operator="diagonal")),
    "s2_only": (lambda: llama(64, 2, 4, 2, 97), _r(0.5, 1.0, None, operator="none")),
    "mix_off": (lambda: llama(96, 2, 6, 2, 97), _r(0.5, 1.0, 1.0, mix_channels=False)),
    "cpt": (lambda: llama(64, 2, 4, 2, 97), _r(0.5, 1.0, 1.0, base_trainable=True)),
}


def _random_scores(apex: Apex, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    a = apex.arch
    return {"attn": [torch.randn(a.n_kv, generator=g) for _ in range(a.n_layers)],
            "ffn": [torch.randn(a.d_ff, generator=g) for _ in range(a.n_layers)]}


# random scores (other P/N layouts) double the sweep: part of make test, not of make test-fast
@pytest.mark.parametrize("scores", ["activation", pytest.param("random", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_expand_perturb_restage_fuse(case, scores):
    build, kwargs = CASES[case]
    model, inputs = build(), batch()
    keys = list(model.state_dict().keys())
    ref = logits(model, inputs)
    apex = Apex(model, ApexConfig(**kwargs))
    if scores == "activation":
        with apex.assessing():
            logits(model, inputs)
        apex.expand()
    else:
        apex.expand(_random_scores(apex, 3))
    assert rel(ref, logits(model, inputs)) <= TOL

    ops = apex.operator_parameters()
    assert ops, "every case installs some operator"
    perturb(ops)
    pert = logits(model, inputs)
    assert rel(ref, pert) > 1e-3                               # the operators do act

    model.train()
    model(**inputs)                                            # stage scores
    model.eval()
    info = apex.restage()
    assert info["stage"] == 1
    assert rel(pert, logits(model, inputs)) <= TOL            # fold + reselect + permute
    perturb(apex.operator_parameters(), seed=6)
    pert2 = logits(model, inputs)
    apex.fuse()
    assert rel(pert2, logits(model, inputs)) <= TOL
    assert list(model.state_dict().keys()) == keys
    assert all(type(m).__name__ == "Linear" for n, m in model.named_modules() if n.endswith("_proj"))

    fresh = build()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))


def test_fuse_keeps_parameter_objects():
    model = llama(64, 2, 4, 2, 97)
    before = {n: p for n, p in model.named_parameters()}
    apex = Apex(model, ApexConfig(k_ratio=0.5, tuned_attn_ratio=None, tuned_ffn_ratio=None))
    apex.expand()
    v = model.model.layers[0].self_attn.v_proj
    assert v.weight is before["model.layers.0.self_attn.v_proj.weight"]
    apex.restage()
    apex.fuse()
    after = {n: p for n, p in model.named_parameters()}
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)


def test_resume_from_state_dicts():
    inputs = batch()
    model = llama(96, 2, 6, 2, 97)
    cfg = ApexConfig(k_ratio=0.5, tuned_attn_ratio=1.0, tuned_ffn_ratio=1.0, seed=4)
    apex = Apex(model, cfg)
    apex.expand(_random_scores(apex, 0))
    perturb(apex.operator_parameters())
    model.train()
    model(**inputs)
    model.eval()
    saved_apex, saved_model = apex.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}

    other = llama(96, 2, 6, 2, 97, seed=9)
    apex2 = Apex(other, cfg)
    apex2.load_state_dict(saved_apex)
    other.load_state_dict(saved_model)
    assert torch.equal(logits(other, inputs), logits(model, inputs))
    for a, b in zip(apex.scores["ffn"], apex2.scores["ffn"], strict=True):
        assert torch.equal(a, b)
    info1, info2 = apex.restage(), apex2.restage()
    assert info1["stage"] == info2["stage"] == 1
    assert torch.equal(logits(other, inputs), logits(model, inputs))
    assert all(torch.equal(a, b) for a, b in zip(apex.unit_ids["ffn"], apex2.unit_ids["ffn"], strict=True))
