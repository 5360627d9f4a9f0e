"""Monarch mixer (method §3.1) and the ablation mixers."""

import math

import pytest
import torch

from apexlm.apex.mixers import DenseMixer, DiagonalMixer, make_mixer
from apexlm.apex.monarch import Monarch, nearest_divisor


@pytest.mark.parametrize("n,nb", [(768, 24), (2064, 43), (86, 2), (97, 1), (64, 8), (12, 3), (1, 1), (49, 7)])
def test_divisor_rule(n, nb):
    assert nearest_divisor(n) == nb


def _reference(m: Monarch, x: torch.Tensor) -> torch.Tensor:
    """The §3.1 recipe, one vector at a time with explicit loops."""
    nb, b = m.nblocks, m.block
    out = torch.empty_like(x)
    for r in range(x.shape[0]):
        y = torch.cat([m.blkdiag1[j] @ x[r, j * b:(j + 1) * b] for j in range(nb)])
        for g in range(nb):
            z = m.blkdiag2[g] @ y[g::nb]
            for s in range(b):
                out[r, s * nb + g] = z[s]
    return out


@pytest.mark.parametrize("n", [12, 86, 97, 16])
def test_monarch_matches_recipe_and_dense(n):
    m = Monarch(n, "noise", 50.0, torch.Generator().manual_seed(n))
    x = torch.randn(3, n, dtype=torch.float32)
    with torch.no_grad():
        ref = _reference(m, x)
        assert torch.allclose(m(x), ref, atol=1e-5)
        assert torch.allclose(x @ m.dense().T, ref, atol=1e-5)
        assert torch.allclose(m(x.reshape(3, 1, n)).reshape(3, n), ref, atol=1e-5)   # leading dims


def test_prime_is_one_dense_block():
    m = Monarch(97, "noise", 1.0)
    assert (m.nblocks, m.block) == (1, 97)
    assert tuple(m.blkdiag1.shape) == (1, 97, 97)


def test_random_init_is_zero_operator_with_gradient():
    m = Monarch(86, "random", 1.0, torch.Generator().manual_seed(0))
    assert (m.nblocks, m.block) == (2, 43)
    assert torch.count_nonzero(m.dense()) == 0
    bound = 1.0 / m.block                                    # kaiming_uniform(a=√5) with fan_in b²
    assert m.blkdiag1.abs().max() <= bound and m.blkdiag1.abs().max() > 0.5 * bound
    x = torch.randn(4, 86)
    (m(x) * torch.randn(4, 86)).sum().backward()
    assert m.blkdiag2.grad.abs().sum() > 0
    assert m.blkdiag1.grad.abs().sum() == 0                  # blkdiag2 = 0 blocks it for now


def test_init_scale_and_zeros_and_reset():
    g = torch.Generator().manual_seed(0)
    m = Monarch(64, "noise", 2.0, g)
    assert m.blkdiag2.abs().max() <= 2.0 * 0.01 / math.sqrt(8)
    assert torch.count_nonzero(m.dense()) > 0
    z = Monarch(64, "zeros", 1.0, g)
    assert torch.count_nonzero(z.blkdiag1) == 0 and torch.count_nonzero(z.blkdiag2) == 0
    r = Monarch(64, "random", 1.0, g)
    with torch.no_grad():
        r.blkdiag2.normal_()
    r.reset_(g)
    assert torch.count_nonzero(r.dense()) == 0


def test_ablation_mixers():
    d = DenseMixer(5)
    q = DiagonalMixer(5)
    assert torch.count_nonzero(d.dense()) == 0 and torch.count_nonzero(q.dense()) == 0
    with torch.no_grad():
        d.matrix.normal_()
        q.diag.normal_()
    x = torch.randn(3, 5)
    assert torch.allclose(d(x), x @ d.dense().T, atol=1e-6)
    assert torch.allclose(q(x), x @ q.dense().T, atol=1e-6)
    d.reset_()
    q.reset_()
    assert torch.count_nonzero(d.matrix) == 0 and torch.count_nonzero(q.diag) == 0
    assert make_mixer("none", 5, "random", 1.0, None, None, None) is None


def test_meta_device_allocates_nothing():
    m = Monarch(2064, "random", 1.0, torch.Generator().manual_seed(0), device=torch.device("meta"))
    assert m.blkdiag1.is_meta
    assert m(torch.empty(7, 2064, device="meta")).shape == (7, 2064)
