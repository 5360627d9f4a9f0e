"""Trainable sets, optimizer groups and stage-boundary optimizer handling (method §5, §6, §7)."""

import torch

from apexlm.apex import Apex, ApexConfig, count_params
from tests.support.models import batch, llama, logits, perturb, rel

CFG = dict(k_ratio=0.25, tuned_attn_ratio=0.75, tuned_ffn_ratio=0.6)


def _names(model, pred):
    return {n for n, p in model.named_parameters() if pred(p)}


def test_instruction_tuning_trainable_set():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(**CFG))
    apex.expand()
    trainable = _names(model, lambda p: p.requires_grad)
    ops = {id(p) for p in apex.operator_parameters()}
    for name, p in model.named_parameters():
        is_emb = "embed_tokens" in name or "lm_head" in name
        assert p.requires_grad == (id(p) in ops or is_emb), name
    assert any(".s2" in n for n in trainable) and any("blkdiag" in n for n in trainable)
    assert not any("norm" in n for n in trainable)
    assert "model.layers.0.self_attn.q_proj.s2" in trainable            # finetune_qk
    off = llama(64, 2, 8, 4, 97)
    Apex(off, ApexConfig(**CFG, finetune_qk=False, train_embeddings=False)).expand()
    names = _names(off, lambda p: p.requires_grad)
    assert not any("q_proj" in n or "k_proj" in n or "embed" in n or "lm_head" in n for n in names)


def test_base_trainable_has_no_s2_and_trains_everything():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(**CFG, base_trainable=True))
    apex.expand()
    assert all(p.requires_grad for p in model.parameters())
    assert not any(".s2" in n for n, _ in model.named_parameters())
    assert apex.operator_parameters()
    trainable, total = count_params(model)
    assert trainable == total


def test_param_groups_unique_and_mixer_lr():
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(**CFG))
    apex.expand()
    groups = apex.param_groups(lr=1e-3, weight_decay=0.1, mixer_lr_scale=30.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    mixer_ids = {id(p) for n, p in model.named_parameters() if "blkdiag" in n}
    for g in groups:
        in_mixer = {id(p) in mixer_ids for p in g["params"]}
        assert len(in_mixer) == 1
        assert g["lr"] == (30e-3 if in_mixer == {True} else 1e-3)
    by_name = {g["name"]: g for g in groups}
    assert by_name["vec_scale"]["weight_decay"] == 0.0 and by_name["s2"]["weight_decay"] == 0.1
    assert all(p.dim() >= 2 for p in by_name["base"]["params"])
    torch.optim.AdamW(groups)                                   # accepted as is


def _train_step(model, opt, inputs):
    model.train()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()


def test_restage_resets_operator_state_and_permutes_base_state():
    inputs = batch()
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(**CFG, base_trainable=True))
    apex.expand()
    opt = torch.optim.Adam(apex.param_groups(lr=1e-3))
    _train_step(model, opt, inputs)
    up = model.model.layers[0].mlp.up_proj.weight
    ids_before = apex.unit_ids["ffn"][0].clone()
    avg_before = opt.state[up]["exp_avg"].clone()
    apex.restage(opt, reset_base_state=False)
    assert all(p not in opt.state for p in apex.operator_parameters())
    ids_after = apex.unit_ids["ffn"][0]
    # row j now holds the unit that was at the position where its original id used to be
    pos_before = {int(u): j for j, u in enumerate(ids_before)}
    src = torch.tensor([pos_before[int(u)] for u in ids_after])
    assert torch.equal(opt.state[up]["exp_avg"], avg_before[src])
    _train_step(model, opt, inputs)                             # training continues
    apex.restage(opt, reset_base_state=True)
    assert len(opt.state) == 0


def test_training_then_fuse_preserves_function():
    inputs = batch()
    model = llama(64, 2, 8, 4, 97)
    apex = Apex(model, ApexConfig(**CFG))
    with apex.assessing():
        logits(model, inputs)
    apex.expand()
    opt = torch.optim.AdamW(apex.param_groups(lr=1e-2, mixer_lr_scale=10.0))
    for _ in range(2):
        _train_step(model, opt, inputs)
    apex.restage(opt)
    _train_step(model, opt, inputs)
    perturb(apex.operator_parameters(), 0.05)
    before = logits(model, inputs)
    apex.fuse()
    assert rel(before, logits(model, inputs)) <= 1e-5
    s = apex.summary()
    assert s["stage"] == 1 and s["expanded"] is False
