"""Column/row wrappers and the fold against dense references written out here (method §3.3–§3.6, §4)."""

import pytest
import torch
from torch import nn

from apexlm.apex.expanded_linear import ColumnWrapper, OperatorGroup, RowWrapper
from apexlm.apex.fuse import fold_layer
from apexlm.apex.layer_ops import LayerOps
from apexlm.apex.monarch import Monarch


def _group(n: int, seed: int = 0) -> OperatorGroup:
    """A shared operator (random init) moved to random, non-identity values everywhere."""
    g = torch.Generator().manual_seed(seed)
    group = OperatorGroup(n, Monarch(n, "random", 1.0, g), torch.device("cpu"), torch.float32)
    with torch.no_grad():
        group.mixer.blkdiag2.copy_(torch.randn(group.mixer.blkdiag2.shape, generator=g))
        group.mixer_vec.copy_(1 + torch.randn(n, generator=g))
    return group


def _randomise(w: nn.Module) -> None:
    with torch.no_grad():
        for p in w.own_parameters():
            p.normal_()


@pytest.mark.parametrize("mix", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_column_wrapper_matches_formula(mix, bias):
    torch.manual_seed(0)
    n, tuned, out_f, in_f = 6, 15, 20, 11
    base = nn.Linear(in_f, out_f, bias=bias)
    group = _group(n)
    w = ColumnWrapper(base, tuned, n, group, use_s2=True, mix_channels=mix)
    _randomise(w)
    assert w.weight is base.weight and (not bias or w.bias is base.bias)
    m = group.mixer.dense()                                    # (n, n)
    vec, scale = torch.diag(group.mixer_vec.detach()), torch.diag(w.mixer_scale.detach())
    wt = base.weight.detach().clone()
    u = wt[:tuned] + w.s2.detach()
    u_n, u_p, u_e = u[:n], u[n:2 * n], u[2 * n:]
    if mix:
        ref = torch.cat([vec @ u_n + m @ u_p, scale @ u_p, u_e, wt[tuned:]])
    else:
        ref = torch.cat([vec @ u_n, m @ u_p + scale @ u_p, u_e, wt[tuned:]])
    eff_w, eff_b = w.effective()
    assert torch.allclose(eff_w, ref, atol=1e-5)
    x = torch.randn(3, 4, in_f)
    if bias:
        b = base.bias.detach()
        b_n = vec @ b[:n] + (m @ b[n:2 * n] if mix else 0)
        b_p = scale @ b[n:2 * n] + (0 if mix else m @ b[n:2 * n])
        ref_b = torch.cat([b_n, b_p, b[2 * n:]])
        assert torch.allclose(eff_b, ref_b, atol=1e-5)
        assert torch.allclose(w(x), x @ ref.T + ref_b, atol=1e-4)
    else:
        assert eff_b is None
        assert torch.allclose(w(x), x @ ref.T, atol=1e-4)


@pytest.mark.parametrize("mix", [True, False])
@pytest.mark.parametrize("groups,slots,inner", [(2, 3, 4), (3, 1, 5), (4, 1, 1)])
def test_row_wrapper_matches_formula_slot_major(mix, groups, slots, inner):
    torch.manual_seed(1)
    c = groups * slots * inner                                 # N (and P) columns
    tuned, out_f = 2 * c + slots * inner, 7
    in_f = tuned + 2 * slots * inner
    base = nn.Linear(in_f, out_f, bias=True)
    group = _group(groups * inner, seed=2)
    w = RowWrapper(base, tuned, groups, slots, inner, group, use_s2=True, mix_channels=mix)
    _randomise(w)
    m, vec = group.mixer.dense(), group.mixer_vec.detach()
    u = base.weight.detach()[:, :tuned] + w.s2.detach()
    ref = base.weight.detach().clone()
    ref[:, :tuned] = u
    # column of N/P with (group a, slot r, dim d) sits at a*slots*inner + r*inner + d; mixer index a*inner + d
    for r in range(slots):
        cols = torch.tensor([a * slots * inner + r * inner + d for a in range(groups) for d in range(inner)])
        un, up = u[:, cols], u[:, c + cols]
        if mix:
            ref[:, cols] = un * vec + up @ m.T
        else:
            ref[:, cols] = un * vec
            ref[:, c + cols] = up + up @ m.T
    eff_w, eff_b = w.effective()
    assert torch.allclose(eff_w, ref, atol=1e-5)
    assert eff_b is base.bias                                  # row side leaves the bias alone
    x = torch.randn(5, in_f)
    assert torch.allclose(w(x), x @ ref.T + base.bias.detach(), atol=1e-4)


def test_s2_only_wrappers():
    torch.manual_seed(2)
    col = ColumnWrapper(nn.Linear(6, 10, bias=True), 4, 0, None, use_s2=True)
    row = RowWrapper(nn.Linear(10, 6, bias=False), 4, 0, 1, 1, None, use_s2=True)
    _randomise(col)
    _randomise(row)
    ref_c = col.weight.detach().clone()
    ref_c[:4] += col.s2.detach()
    ref_r = row.weight.detach().clone()
    ref_r[:, :4] += row.s2.detach()
    assert torch.allclose(col.effective()[0], ref_c) and torch.allclose(row.effective()[0], ref_r)
    assert col.effective()[1] is col.bias


def test_fold_updates_all_members_then_resets_shared_operator():
    """v and o (GQA, rep 2) share one operator: the fold writes both from the trained values first."""
    torch.manual_seed(3)
    k, rep, d_h, groups_total, hidden = 2, 2, 3, 5, 8
    v_lin = nn.Linear(hidden, groups_total * d_h, bias=True)
    o_lin = nn.Linear(groups_total * rep * d_h, hidden, bias=False)
    group = _group(k * d_h, seed=4)
    tuned = 2 * k + 1
    v = ColumnWrapper(v_lin, tuned * d_h, k * d_h, group, use_s2=True)
    o = RowWrapper(o_lin, tuned * rep * d_h, k, rep, d_h, group, use_s2=True)
    _randomise(v)
    _randomise(o)
    x_v, x_o = torch.randn(4, hidden), torch.randn(4, groups_total * rep * d_h)
    with torch.no_grad():
        want_v, want_o = v(x_v), o(x_o)
    v_param, o_param = v.weight, o.weight
    fold_layer(LayerOps(wrappers={"v": v, "o": o}, groups={"attn": group}), torch.Generator().manual_seed(0))
    assert v.weight is v_param and o.weight is o_param
    with torch.no_grad():
        assert torch.allclose(v_lin(x_v), want_v, atol=1e-5)  # the plain linear now computes the same
        assert torch.allclose(o_lin(x_o), want_o, atol=1e-5)
        assert torch.allclose(v(x_v), want_v, atol=1e-5)      # operators at identity: wrapper = plain
        assert torch.allclose(o(x_o), want_o, atol=1e-5)
        assert torch.count_nonzero(group.mixer.dense()) == 0
        assert torch.count_nonzero(v.s2) == 0 and torch.all(v.mixer_scale == 1)
        assert torch.all(group.mixer_vec == 1)
