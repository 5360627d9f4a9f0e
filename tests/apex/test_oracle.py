"""The span implementation against the weight-side oracle, in float64 (method §3.7).

For IT and CPT, MHA and GQA, LLaMA with biases everywhere and Qwen2 (q/k/v biases), mix_channels on/off and
every operator: outputs and every gradient (base weights and biases, s2, vec, scale, the mixer factors,
the input embeddings' gradient as the input's) equal the oracle's to 1e-10 relative, at random (non-identity)
operator values, then again after a stage transition (fold → reselect → permute) at new random values.
The formulation used under torch.compile (`forward_traceable`) is checked the same way.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from apexlm.apex import Apex, ApexConfig
from apexlm.apex.expanded_linear import ColumnWrapper, ExpandedLinear
from tests.apex import oracle_wrappers as oracle
from tests.support import models

RTOL = 1e-10


def _to_oracle(model: nn.Module) -> nn.Module:
    """A deep copy whose expanded modules are the oracle's, holding the copy's own Parameters."""
    twin = copy.deepcopy(model)
    for name, mod in list(twin.named_modules()):
        if not isinstance(mod, ExpandedLinear):
            continue
        mix = mod.mix_channels
        if isinstance(mod, ColumnWrapper):
            new = oracle.ColumnWrapper(mod, mod.tuned_end, mod.n_mix, mod.shared, mod.s2 is not None, mix)
            if mod.mixer_scale is not None:
                new.mixer_scale = mod.mixer_scale
        else:
            new = oracle.RowWrapper(mod, mod.tuned_end, mod.groups, mod.slots, mod.inner, mod.shared,
                                    mod.s2 is not None, mix)
        if mod.s2 is not None:
            new.s2 = mod.s2
        parent, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(parent), leaf, new)
    return twin


def _randomize_operators(apex: Apex, seed: int) -> None:
    """Non-identity operator values, so every gradient path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in apex.operator_parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * 0.4 - 0.2 + (p.dim() == 1))


def _grads(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """(logits, {param name: grad}, d loss / d input embeddings) of a fixed, sensitive loss."""
    model.zero_grad(set_to_none=True)
    emb = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits
    weight = torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)
    (logits.square().mean() + (logits * weight).sum() / logits.numel()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads, emb.grad.clone()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _compare(model: nn.Module, batch: dict) -> None:
    ref_model = _to_oracle(model)
    assert set(dict(ref_model.named_parameters())) == set(dict(model.named_parameters()))   # same keys
    out, grads, dx = _grads(model, batch)
    ref_out, ref_grads, ref_dx = _grads(ref_model, batch)
    assert _rel(out, ref_out) < RTOL and _rel(dx, ref_dx) < RTOL
    assert set(grads) == set(ref_grads)
    roles = {"s2", "mixer_vec", "mixer_scale", "blkdiag1", "blkdiag2", "matrix", "diag", "weight", "bias"}
    seen = set()
    for name, g in grads.items():
        assert _rel(g, ref_grads[name]) < RTOL, name
        seen.add(name.rsplit(".", 1)[-1])
    return seen & roles


CASES = [  # (model kind, kv heads, base_trainable, mix_channels, operator)
    *[("llama_bias", kv, cpt, mix, op) for kv in (4, 2) for cpt in (False, True) for mix in (True, False)
      for op in ("monarch", "dense", "diagonal")],
    ("llama_bias", 2, False, True, "none"), ("llama_bias", 4, False, False, "none"),
    ("qwen2", 2, False, True, "monarch"), ("qwen2", 2, True, True, "monarch"),
    ("qwen2", 2, False, False, "dense"), ("qwen2", 2, True, False, "diagonal"),
]


@pytest.mark.parametrize("kind,kv,cpt,mix,op", CASES)
def test_span_implementation_equals_oracle(kind: str, kv: int, cpt: bool, mix: bool, op: str) -> None:
    if kind == "qwen2":
        model = models.qwen2(hidden=32, heads=4, kv=kv, ffn=40)
    else:
        model = models.llama(hidden=32, heads=4, kv=kv, ffn=40, bias=True)
    model = model.double().train()
    cfg = ApexConfig(k_ratio=0.25, tuned_attn_ratio=None if cpt else 0.75, tuned_ffn_ratio=None if cpt else 0.6,
                     operator=op, mix_channels=mix, base_trainable=cpt, finetune_qk=not cpt)
    apex = Apex(model, cfg)
    g = torch.Generator().manual_seed(3)
    scores = {"attn": [torch.rand(kv, generator=g) for _ in range(2)],
              "ffn": [torch.rand(40, generator=g) for _ in range(2)]}
    apex.expand(scores)
    apex.close()
    batch = models.batch()
    _randomize_operators(apex, 0)
    seen = _compare(model, batch)
    with pytest.MonkeyPatch.context() as mp:           # the compiled path's formulation, run eagerly
        mp.setattr(ExpandedLinear, "forward", ExpandedLinear.forward_traceable)
        _compare(model, batch)
    want = {"weight", "bias"} if cpt else {"s2"}
    want |= {"mixer_vec", "mixer_scale"} if op != "none" else set()
    want |= {"monarch": {"blkdiag1", "blkdiag2"}, "dense": {"matrix"}, "diagonal": {"diag"}}.get(op, set())
    assert want <= seen
    for mod in model.modules():                          # the full effective weights agree too
        if isinstance(mod, ExpandedLinear):
            twin = _to_oracle(nn.Sequential(mod))[0]
            w, b = mod.effective()
            rw, rb = twin.effective()
            assert _rel(w, rw) < RTOL and (b is None or _rel(b, rb) < RTOL)
    with apex.assessing(), torch.no_grad():              # scores for the next stage
        apex.recorder.attach()
        model(**batch)
    apex.restage(None)
    apex.close()
    _randomize_operators(apex, 1)
    _compare(model, batch)


@pytest.mark.parametrize("cpt", [False, True])
def test_span_under_bf16_autocast_matches_oracle_and_keeps_fp32_grads(cpt: bool) -> None:
    """Mixed precision as `bf16-mixed` runs it: GEMMs in bf16, the span's algebra and every gradient in
    the Parameters' fp32; the oracle under the same autocast agrees to bf16 accuracy."""
    model = models.qwen2(hidden=32, heads=4, kv=2, ffn=40).float().train()
    cfg = ApexConfig(k_ratio=0.25, tuned_attn_ratio=None if cpt else 0.75, tuned_ffn_ratio=None if cpt else 0.6,
                     base_trainable=cpt, finetune_qk=not cpt)
    apex = Apex(model, cfg)
    g = torch.Generator().manual_seed(3)
    apex.expand({"attn": [torch.rand(2, generator=g) for _ in range(2)],
                 "ffn": [torch.rand(40, generator=g) for _ in range(2)]})
    apex.close()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in apex.operator_parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.4 - 0.2 + (p.dim() == 1))
    batch = models.batch()
    ref_model = _to_oracle(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads, dx = _grads(model, batch)
        ref_out, ref_grads, ref_dx = _grads(ref_model, batch)
    assert set(grads) == set(ref_grads) and grads
    assert _rel(out.float(), ref_out.float()) < 2e-2 and _rel(dx.float(), ref_dx.float()) < 5e-2
    for name, p in model.named_parameters():
        if name in grads:
            assert grads[name].dtype == p.dtype == torch.float32, name
            assert _rel(grads[name], ref_grads[name]) < 5e-2, name
