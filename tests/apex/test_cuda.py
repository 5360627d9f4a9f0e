"""APEX on a CUDA device computes what it computes on the CPU (fp32, TF32 off): scores, selection, expansion,
perturbed operators and fusion (method §1–§4). Skipped, with the reason, where there is no CUDA device."""

from __future__ import annotations

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from tests.support.models import batch, llama, logits, rel

pytestmark = pytest.mark.gpu


def _run(device: str) -> dict:
    """Assess, expand, perturb every operator (same values on every device), fuse; logits (2, 9, vocab) on CPU."""
    model = llama(64, 2, 8, 4, 97).to(device)
    inputs = {k: v.to(device) for k, v in batch().items()}
    out = {"ref": logits(model, inputs).cpu()}
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_attn_ratio=0.75, tuned_ffn_ratio=0.6))
    with apex.assessing():
        logits(model, inputs)
    out["scores"] = {k: [s.cpu() for s in v] for k, v in apex.scores.items()}
    apex.expand()
    out["expanded"] = logits(model, inputs).cpu()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in apex.operator_parameters():
            p.add_((torch.randn(p.shape, generator=g) * 0.1).to(p.device))
    out["perturbed"] = logits(model, inputs).cpu()
    apex.fuse()
    out["fused"] = logits(model, inputs).cpu()
    return out


def test_cuda_matches_cpu() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu, gpu = _run("cpu"), _run("cuda")
    for kind in ("attn", "ffn"):
        for a, b in zip(cpu["scores"][kind], gpu["scores"][kind], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert rel(gpu["ref"], gpu["expanded"]) <= 1e-5  # expansion preserves the function on the device too
    assert rel(gpu["perturbed"], gpu["fused"]) <= 1e-5  # and so does fusion
    for key in ("ref", "expanded", "perturbed", "fused"):
        assert rel(cpu[key], gpu[key]) <= 1e-4, key
