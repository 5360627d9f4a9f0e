"""Effective rank (method §8) on matrices whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from apexlm.analysis.erank import delta_erank, effective_rank, erank_per_layer


@pytest.mark.parametrize("n", [1, 7, 64])
def test_identity_has_full_effective_rank(n: int) -> None:
    assert effective_rank(torch.eye(n)) == pytest.approx(n, rel=1e-5)
    assert effective_rank(3.5 * torch.eye(n)) == pytest.approx(n, rel=1e-5)   # scale-free


def test_rank_one_matrix_has_effective_rank_one() -> None:
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(40, 1, generator=g), torch.randn(1, 25, generator=g)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-4)


def test_known_spectrum_and_zero_matrix() -> None:
    w = torch.diag(torch.tensor([3.0, 1.0]))            # p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(w) == pytest.approx(math.exp(h), rel=1e-5)
    assert effective_rank(torch.zeros(5, 3)) == 0.0    # no direction at all (a weight that did not train)
    assert effective_rank(torch.eye(4, dtype=torch.bfloat16)) == pytest.approx(4.0, rel=1e-5)  # float32 inside


def test_per_layer_tables() -> None:
    cur = {"v": [torch.eye(3), torch.eye(4)]}
    base = {"v": [torch.zeros(3, 3), torch.eye(4)]}
    assert erank_per_layer(cur)["v"] == pytest.approx([3.0, 4.0], rel=1e-5)
    assert delta_erank(cur, base)["v"] == pytest.approx([3.0, 0.0], rel=1e-5)
