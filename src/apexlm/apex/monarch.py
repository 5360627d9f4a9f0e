"""Monarch mixer: the structured n×n operator M of method §3.1.

M = (block-diagonal factor 2) · (stride permutation) · (block-diagonal factor 1), with nb blocks of size
b = n/nb, nb the divisor of n nearest √n (smaller on ties). It is applied to row vectors: `mixer(x)`
returns x·Mᵀ for x (..., n), at a cost of 2·n·b multiply-adds per row, never materialising M.
`mix(x, *factors())` is the same map with the factors passed in (method §3.1); every mixer has both.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def nearest_divisor(n: int) -> int:
    """The divisor of n closest to √n, the smaller one on a tie (§3.1 `find_divisor`).

    768 → 24, 2064 → 43, 86 → 2, a prime → 1, a perfect square → its root.
    """
    if n < 1:
        raise ValueError(f"nearest_divisor needs n >= 1, got {n}")
    root = math.sqrt(n)
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d:
            continue
        for cand in (d, n // d):
            if abs(cand - root) < abs(best - root) or (abs(cand - root) == abs(best - root) and cand < best):
                best = cand
    return best


def init_uniform_(param: torch.Tensor, bound: float, gen: torch.Generator | None) -> None:
    """Fill `param` with U(−bound, bound) drawn on the CPU from `gen` (device-independent, reproducible).

    Nothing is drawn for a meta tensor (budget dry-runs allocate nothing).
    """
    if param.is_meta:
        return
    with torch.no_grad():
        if bound == 0.0:
            param.zero_()
            return
        cpu = torch.empty(param.shape, dtype=torch.float32).uniform_(-bound, bound, generator=gen)
        param.copy_(cpu)


class Monarch(nn.Module):
    """Two block-diagonal factors with a stride permutation in between (§3.1).

    Parameters blkdiag1, blkdiag2: (nb, b, b). For a row x (n):
      1. chunk j = x[j*b:(j+1)*b] becomes y_j = blkdiag1[j] @ chunk j;
      2. group l gathers y at positions l, l+nb, l+2nb, … (b entries) and becomes z_l = blkdiag2[l] @ group;
      3. output position s*nb + l holds z_l[s].
    """

    def __init__(self, n: int, init: str = "random", init_scale: float = 1.0,
                 gen: torch.Generator | None = None, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n = n
        self.nblocks = nearest_divisor(n)
        self.block = n // self.nblocks
        self.init, self.init_scale = init, float(init_scale)
        shape = (self.nblocks, self.block, self.block)
        self.blkdiag1 = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        self.blkdiag2 = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        self.reset_(gen)

    def reset_(self, gen: torch.Generator | None = None) -> None:
        """Re-initialise the factors (§3.1).

        random: blkdiag1 ~ U(±1/b) (= kaiming_uniform(a=√5) with fan_in b·b), blkdiag2 = 0 ⇒ M = 0 but
            ∂M/∂blkdiag2 ≠ 0. noise: both ~ U(±0.01/√b), M small but non-zero (not the identity state).
        zeros: both 0 ⇒ M = 0 with zero gradients: M never trains (degenerate, kept as the ablation).
        All bounds are multiplied by init_scale.
        """
        b, s = self.block, self.init_scale
        if self.init == "random":
            init_uniform_(self.blkdiag1, s / b, gen)
            init_uniform_(self.blkdiag2, 0.0, gen)
        elif self.init == "noise":
            init_uniform_(self.blkdiag1, s * 0.01 / math.sqrt(b), gen)
            init_uniform_(self.blkdiag2, s * 0.01 / math.sqrt(b), gen)
        else:
            init_uniform_(self.blkdiag1, 0.0, gen)
            init_uniform_(self.blkdiag2, 0.0, gen)

    def factors(self) -> tuple[torch.Tensor, ...]:
        """The trainable tensors `mix` takes, in order (the expanded linear's autograd passes them)."""
        return (self.blkdiag1, self.blkdiag2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., n) → x·Mᵀ (..., n); the factors are cast to x's dtype (float32 folds, §4)."""
        return self.mix(x, self.blkdiag1, self.blkdiag2)

    def mix(self, x: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor) -> torch.Tensor:
        """`forward` with the factors given explicitly (so a custom backward can re-run it on copies)."""
        nb, b = self.nblocks, self.block
        lead = x.shape[:-1]
        w1 = blkdiag1.to(x.dtype)                               # (nb, b, b)
        w2 = blkdiag2.to(x.dtype)                               # (nb, b, b)
        h = x.reshape(-1, nb, b).transpose(0, 1)                # (nb, R, b)   chunk j
        h = torch.bmm(h, w1.transpose(1, 2))                    # (nb, R, b)   y_j = W1[j] @ chunk
        h = h.transpose(0, 1).reshape(-1, b, nb)                # (R, b, nb)   [s, l] = flat s*nb + l
        h = h.permute(2, 0, 1)                                  # (nb, R, b)   group l = positions l + s*nb
        h = torch.bmm(h, w2.transpose(1, 2))                    # (nb, R, b)   z_l = W2[l] @ group
        return h.permute(1, 2, 0).reshape(*lead, self.n)        # (..., n)     position s*nb + l = z_l[s]

    def mix_left(self, u: torch.Tensor, blkdiag1: torch.Tensor, blkdiag2: torch.Tensor) -> torch.Tensor:
        """M·u for u (n, cols), i.e. `mix(u.T).T`, without transposing u (the column-side weight rows).

        Chunk j of u's rows goes through blkdiag1[j]; the stride permutation is a (b, nb) ↔ (nb, b) swap of
        the row index; group l goes through blkdiag2[l] (method §3.1).
        """
        nb, b = self.nblocks, self.block
        cols = u.shape[-1]
        w1 = blkdiag1.to(u.dtype)                               # (nb, b, b)
        w2 = blkdiag2.to(u.dtype)                               # (nb, b, b)
        h = torch.bmm(w1, u.reshape(nb, b, cols))               # (nb, b, cols)  row j*b+s = y_j[s]
        h = h.reshape(b, nb, cols).transpose(0, 1)              # (nb, b, cols)  group l = rows l + s*nb
        h = torch.bmm(w2, h)                                    # (nb, b, cols)  z_l
        return h.transpose(0, 1).reshape(self.n, cols)          # (n, cols)      row s*nb + l = z_l[s]

    def dense(self) -> torch.Tensor:
        """The explicit M (n, n) with forward(x) = x @ M.T (float32, for tests and analysis)."""
        eye = torch.eye(self.n, device=self.blkdiag1.device, dtype=torch.float32)
        return self.forward(eye).T

    def extra_repr(self) -> str:
        return f"n={self.n}, nblocks={self.nblocks}, block={self.block}, init={self.init}"
