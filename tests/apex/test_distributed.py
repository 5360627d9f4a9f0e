"""Two-process (gloo) scoring equals one process running both micro-batches (method §1, DDP)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from apexlm.apex import Apex, ApexConfig
from tests.support.models import batch, llama

pytestmark = pytest.mark.distributed  # two gloo processes

MODES = ("rank", "avg")


def _score(model, micro_batches) -> dict:
    """Scores of both modes after training-mode forwards of `micro_batches`."""
    apexes = {m: Apex(model, ApexConfig(k_ratio=0.25, tuned_ffn_ratio=0.5, scoring=m)) for m in MODES}
    model.train()
    with torch.no_grad():
        for b in micro_batches:
            model(**b)
    return {m: a.scores for m, a in apexes.items()}


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        scores = _score(llama(64, 2, 8, 4, 97), [batch(2, 8, pad=3, seed=10 + rank)])
        torch.save(scores, os.path.join(tmp, f"scores{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_scores_equal_sequential(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    want = _score(llama(64, 2, 8, 4, 97), [batch(2, 8, pad=3, seed=10 + r) for r in range(2)])
    for rank in range(2):
        got = torch.load(tmp_path / f"scores{rank}.pt")
        for mode in MODES:
            for kind in ("attn", "ffn"):
                for g, w in zip(got[mode][kind], want[mode][kind], strict=True):
                    assert torch.allclose(g, w, rtol=1e-5, atol=1e-6), (mode, kind)
    assert any(s.abs().sum() > 0 for s in want["rank"]["ffn"])
