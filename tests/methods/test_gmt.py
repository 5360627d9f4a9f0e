"""Gradient-Mask Tuning: per-tensor quantile masks, masked entries don't move under plain SGD."""

from __future__ import annotations

import pytest
import torch

from apexlm.errors import ConfigError
from apexlm.methods import build_method
from apexlm.methods.gmt import GmtMethod, kth_smallest_bisect, mask_small_gradients
from tests.support.loop import loss_of, train_steps
from tests.support.models import batches, micro_model


def test_bisection_matches_kthvalue() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5000, generator=g).abs()
    a[:700] = 0.0  # ties at zero, as unseen embedding rows have
    a[700:900] = a[900]  # ties elsewhere
    for k in (1, 350, 700, 701, 899, 2500, 4999, 5000):
        assert torch.equal(kth_smallest_bisect(a, k), torch.kthvalue(a, k).values), k


def test_mask_keeps_the_largest_entries() -> None:
    g = torch.randn(300, 7, generator=torch.Generator().manual_seed(1))
    masked_grad = g.clone()
    n_masked = int(mask_small_gradients(masked_grad, 0.4))
    assert n_masked == round(0.4 * g.numel())
    kept = masked_grad != 0
    assert torch.equal(masked_grad[kept], g[kept])
    assert g[~kept].abs().max() <= g[kept].abs().min()
    assert int(mask_small_gradients(g.clone(), 0.0)) == 0


@pytest.mark.parametrize("ratio", [0.4, 0.75])
def test_per_step_mask_fraction_per_tensor(ratio: float) -> None:
    model = micro_model()
    method = build_method({"name": "gmt", "mask_ratio": ratio})
    model = method.prepare(model)
    model.train()
    for batch in batches(2):
        loss_of(model, batch).backward()
        raw = {n: p.grad.clone() for n, p in model.named_parameters()}
        method.on_before_optimizer_step(model)
        for n, p in model.named_parameters():
            zero_before = int((raw[n] == 0).sum())
            zero_after = int((p.grad == 0).sum())
            expected = max(round(ratio * p.numel()), zero_before)  # ties at zero (unseen tokens) stay zero
            assert abs(zero_after - expected) <= 1, n
            if zero_before == 0:
                assert zero_after / p.numel() == pytest.approx(ratio, abs=1.0 / p.numel())
        model.zero_grad(set_to_none=True)
    s = method.summary(model)
    assert s["gmt_masked_steps"] == 2 and s["gmt_mask_fraction"] >= ratio - 1e-3
    assert s["gmt_mask_fraction"] < ratio + 0.1


def test_masked_entries_do_not_move_under_sgd() -> None:
    model = micro_model()
    method = build_method({"name": "gmt", "mask_ratio": 0.4})
    model = method.prepare(model)
    opt = torch.optim.SGD(method.param_groups(model, 0.1, 0.0), lr=0.1, momentum=0.0, weight_decay=0.0)
    masks: dict[str, torch.Tensor] = {}

    class Recording(GmtMethod):
        def on_before_optimizer_step(self, m: torch.nn.Module) -> None:
            super().on_before_optimizer_step(m)
            masks.update({n: p.grad == 0 for n, p in m.named_parameters()})

    rec = Recording({"name": "gmt", "mask_ratio": 0.4})
    for step_batch in batches(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        train_steps(model, rec, opt, [step_batch])
        for n, p in model.named_parameters():
            m = masks[n]
            assert torch.equal(p.detach()[m], before[n][m]), f"masked entries of {n} moved"
            moved = (p.detach()[~m] != before[n][~m]).float().mean()
            assert moved > 0.99, f"unmasked entries of {n} did not move"
    assert rec.summary(model)["gmt_mask_fraction"] >= 0.4 - 1e-3


def test_bad_ratio() -> None:
    with pytest.raises(ConfigError, match="mask_ratio"):
        build_method({"name": "gmt", "mask_ratio": 1.0})
