"""Score recording (method §1): reference with padding, modes, once per forward, training/assessing only."""

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from tests.support.models import batch, llama

from ._reference import Capture, norms, rank_update


def _expected(cap: Capture, masks: list, mode: str, k_attn: int, k_ffn: int, n_kv: int) -> dict:
    out = {}
    for kind, store, k, groups in (("attn", cap.attn, k_attn, n_kv), ("ffn", cap.ffn, k_ffn, None)):
        per_layer = []
        for acts in store:
            acc = None
            for x, mask in zip(acts, masks, strict=True):
                a = norms(x, mask, groups)
                d = a if mode in ("avg", "ma") else rank_update(a, k)
                if acc is None:
                    acc = torch.zeros_like(a)
                acc = acc + d if mode in ("rank", "avg") else 0.9 * acc + 0.1 * d
            per_layer.append(acc / len(acts) if mode == "avg" else acc)
        out[kind] = per_layer
    return out


@pytest.mark.parametrize("mode", ["rank", "avg", "ma", "ma_rank"])
def test_scores_match_hand_reference_with_padding(mode):
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.5, scoring=mode))
    cap = Capture(model)
    batches = [batch(3, 7, pad=4, seed=s) for s in (1, 2, 3)]
    model.train()
    for b in batches:
        model(**b)
    cap.close()
    want = _expected(cap, [b["attention_mask"] for b in batches], mode, 1, 24, 4)
    got = apex.scores
    for kind in ("attn", "ffn"):
        for g, w in zip(got[kind], want[kind], strict=True):
            assert torch.allclose(g.double(), w, rtol=1e-5, atol=1e-5), (kind, g, w)
    if mode == "rank":
        assert any(g.abs().sum() > 0 for g in got["ffn"])


def test_padding_is_masked():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.5, scoring="avg"))
    b = batch(2, 9, pad=5)
    model.train()
    model(**b)
    masked = apex.scores["ffn"][0]
    apex.recorder.zero()
    model(input_ids=b["input_ids"])                           # no mask: every position counts
    assert not torch.allclose(masked, apex.scores["ffn"][0])


def test_eval_forward_recorded_only_when_assessing():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.5))
    model.eval()
    with torch.no_grad():
        model(**batch())
    assert all(s.abs().sum() == 0 for s in apex.scores["ffn"] + apex.scores["attn"])
    with apex.assessing(), torch.no_grad():
        model(**batch())
    assert all(s.abs().sum() > 0 for s in apex.scores["ffn"] + apex.scores["attn"])
    assert apex.recorder.count["ffn"] == [1, 1]


def _enable_checkpointing(model: torch.nn.Module, reentrant: bool) -> None:
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):      # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpoint_recompute_not_counted_twice(reentrant):
    inputs = batch(2, 8, pad=2)
    plain, ckpt = llama(64, 2, 8, 4, 97), llama(64, 2, 8, 4, 97)
    _enable_checkpointing(ckpt, reentrant)
    calls = []
    for layer in ckpt.model.layers:
        layer.mlp.act_fn.register_forward_hook(lambda m, a, o: calls.append(1))
    results = []
    for model in (plain, ckpt):
        apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.5, scoring="avg"))
        model.train()
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        results.append(apex.scores)
        assert apex.recorder.count["ffn"] == [1, 1]
    assert len(calls) == 4                                    # the layers really ran twice
    for kind in ("attn", "ffn"):
        for a, b in zip(results[0][kind], results[1][kind], strict=True):
            assert torch.allclose(a, b, rtol=1e-6)


def test_hooks_follow_wrappers_and_expand_zeroes_scores():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.6))
    with apex.assessing(), torch.no_grad():
        model(**batch())
    apex.expand()
    assert all(s.abs().sum() == 0 for s in apex.scores["attn"])
    assert type(model.model.layers[0].self_attn.o_proj).__name__ == "RowWrapper"
    cap = Capture(model)                                      # hooks on the wrappers, as apex's
    b = batch(2, 6, pad=1, seed=7)
    model.train()
    model(**b)
    cap.close()
    want = _expected(cap, [b["attention_mask"]], "rank", 1, 24, 4)
    for g, w in zip(apex.scores["attn"], want["attn"], strict=True):
        assert torch.equal(g.double(), w)
    apex.fuse()
    apex.recorder.zero()
    model(**b)
    assert all(s.abs().sum() > 0 for s in apex.scores["attn"])   # re-attached to plain o_proj
    apex.close()
    apex.recorder.zero()
    model(**b)
    assert all(s.abs().sum() == 0 for s in apex.scores["attn"])
