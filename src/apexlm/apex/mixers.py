"""Ablation mixers with the Monarch interface, and the factory that picks one (method §3).

Every mixer maps row vectors x (..., n) to x·Mᵀ, exposes `dense()` (M itself), `reset_(gen)` (back
to M = 0), `factors()` / `mix(x, *factors)` (the same map with its parameters passed explicitly) and
`mix_left(u, *factors)` = M·u for a matrix u (n, cols) (the column side's weight rows, no transpose).
`dense`: M is a free n×n matrix; `diagonal`: M = diag(d); both start at zero (§3.1: "R = 0").
"""

from __future__ import annotations

import torch
from torch import nn

from apexlm.apex.monarch import Monarch


class DenseMixer(nn.Module):
    """A full n×n mixing matrix M (parameter `matrix`), zero at init (ablation of §3.1)."""

    def __init__(self, n: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n = n
        self.matrix = nn.Parameter(torch.zeros(n, n, device=device, dtype=dtype))   # (n, n) = M

    def reset_(self, gen: torch.Generator | None = None) -> None:
        """M = 0 (the identity state of the operator)."""
        with torch.no_grad():
            self.matrix.zero_()

    def factors(self) -> tuple[torch.Tensor, ...]:
        return (self.matrix,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., n) → x·Mᵀ."""
        return self.mix(x, self.matrix)

    def mix(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """`forward` with M given explicitly."""
        return x @ matrix.to(x.dtype).T

    def mix_left(self, u: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """M·u for u (n, cols)."""
        return matrix.to(u.dtype) @ u

    def dense(self) -> torch.Tensor:
        return self.matrix.detach().float()


class DiagonalMixer(nn.Module):
    """M = diag(d) (parameter `diag`, length n), zero at init: P unit i feeds only N unit i."""

    def __init__(self, n: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n = n
        self.diag = nn.Parameter(torch.zeros(n, device=device, dtype=dtype))          # (n,)

    def reset_(self, gen: torch.Generator | None = None) -> None:
        """M = 0."""
        with torch.no_grad():
            self.diag.zero_()

    def factors(self) -> tuple[torch.Tensor, ...]:
        return (self.diag,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., n) → x ⊙ d."""
        return self.mix(x, self.diag)

    def mix(self, x: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        """`forward` with d given explicitly."""
        return x * diag.to(x.dtype)

    def mix_left(self, u: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        """M·u = diag(d)·u for u (n, cols)."""
        return diag.to(u.dtype)[:, None] * u

    def dense(self) -> torch.Tensor:
        return torch.diag(self.diag.detach().float())


def make_mixer(kind: str, n: int, init: str, init_scale: float, gen: torch.Generator | None,
               device: torch.device | None, dtype: torch.dtype | None) -> nn.Module | None:
    """Build the mixer named by `ApexConfig.operator` (None for "none": s2 deltas only)."""
    if kind == "monarch":
        return Monarch(n, init, init_scale, gen, device=device, dtype=dtype)
    if kind == "dense":
        return DenseMixer(n, device=device, dtype=dtype)
    if kind == "diagonal":
        return DiagonalMixer(n, device=device, dtype=dtype)
    return None
