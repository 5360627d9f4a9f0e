"""APEX on FSDP2-sharded weights (2 gloo processes, raw `fully_shard`, no Lightning) equals the unsharded model.

Both runs: install the wrappers (identity layout) -> assessment forwards -> expand (select, permute) -> a
training step -> restage keeping the base moments (they are permuted) -> a step -> restage resetting every
state -> fold. The sharded run shards after install, each rank forwarding its own micro-batch (scores are
all-reduced, gradients averaged by FSDP); the reference forwards both micro-batches in one process with the
mean loss. Every weight, gathered layer by layer, must match to 1e-5, and the Parameter objects survive.
Adam's eps is 1e-3: with 1e-8 its first update is ~lr·sign(g), so a 1e-7 difference in a near-zero gradient
(FSDP's reduce-scatter adds in another order) would flip whole entries; the transitions themselves are exact.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apexlm.apex import Apex, ApexConfig
from apexlm.models.sharding import gather_full_state, is_fsdp, reshard_all, shard_model
from tests.support.models import batch, llama

CONFIGS = {  # CPT (every weight trains, mixed-size Monarch) and IT (frozen base, embeddings train, q/k s2)
    "cpt": dict(k_ratio=0.25, tuned_attn_ratio=None, tuned_ffn_ratio=None, base_trainable=True, finetune_qk=False, train_embeddings=False),
    "it": dict(k_ratio=0.25, tuned_attn_ratio=0.75, tuned_ffn_ratio=0.6, finetune_qk=True),
}


def _model():
    return llama(64, 2, 8, 4, 97, seed=3)   # d_ff = 97: uneven shards on 2 ranks


def _batches():
    return [batch(2, 9, pad=3, seed=20 + r) for r in range(2)]


def _step(model, opt, micro):
    model.train()
    for b in micro:
        (model(**b, labels=b["input_ids"]).loss / len(micro)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _run(model, apex: Apex, micro: list[dict]) -> dict[str, float]:
    model.eval()
    with torch.no_grad(), apex.assessing():
        for b in micro:
            model(**b)
    if is_fsdp(model):
        reshard_all(model)       # FSDP2 leaves the root gathered after a no-grad forward
    apex.expand()
    opt = torch.optim.AdamW(apex.param_groups(lr=1e-2, weight_decay=0.1), eps=1e-3)
    _step(model, opt, micro)
    m1 = apex.restage(opt, reset_base_state=False)
    _step(model, opt, micro)
    m2 = apex.restage(opt, reset_base_state=True)
    _step(model, opt, micro)
    apex.fuse()
    return {"j1": m1.get("jaccard_p_ffn", -1.0), "j2": m2.get("jaccard_p_ffn", -1.0)}


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world,))
        out = {}
        for name, kw in CONFIGS.items():
            model = _model()
            apex = Apex(model, ApexConfig(**kw))
            apex.install()
            shard_model(model, mesh)
            v = model.model.layers[0].self_attn.v_proj.weight
            metrics = _run(model, apex, [_batches()[rank]])
            same_param = v is model.model.layers[0].self_attn.v_proj.weight
            state = gather_full_state(model)
            if rank == 0:
                out[name] = {"state": state, "metrics": metrics, "same_param": same_param}
        if rank == 0:
            torch.save(out, os.path.join(tmp, "sharded.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_sharded_transitions_equal_unsharded(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "sharded.pt")
    for name, kw in CONFIGS.items():
        model = _model()
        apex = Apex(model, ApexConfig(**kw))
        metrics = _run(model, apex, _batches())
        want = model.state_dict()
        assert got[name]["same_param"], name
        assert got[name]["metrics"] == metrics, name
        state = got[name]["state"]
        for k, w in want.items():
            torch.testing.assert_close(state[k], w, rtol=1e-5, atol=1e-6, msg=lambda m, k=k, n=name: f"{n} {k}: {m}")
        extra = set(state) - set(want)          # the operators, left in at identity after the fold
        assert extra and all(not k.endswith(".weight") or ".shared." in k for k in extra), sorted(extra)[:4]
