"""Test oracle: the weight-side expansion wrappers as they were before the span implementation.

Each wrapped projection builds its FULL effective weight W' with torch.cat once per forward and calls
`F.linear` once; autograd then computes full-size weight gradients. Simple and obviously right, so the
span implementation (`apexlm.apex.expanded_linear`) is tested against it in float64 (test_oracle.py).
It reads the shared operator only through `shared.mixer(...)`, `shared.mixer_vec` and `shared.n`, so it
runs on the production OperatorGroup; it takes the production module's constructor (the Parameters it
holds) and slot reshapes, none of the span algebra it checks (`span_matmul.py`, `span_algebra.py`). Original notes (method §3.2–§3.6):

Weight-side expansion wrappers: method §3.2–§3.6 (and §3.5 sharing), with biases and GQA.

Each wrapped projection builds its effective weight W' once per forward and calls `F.linear` once. The
tuned span [0, tuned_end) of the permuted layout holds N | P | E (§2). With U = W[tuned] + s2:

column side (v, up, gate; rows, weight (out, in)), mix_channels=True:
    W'_N = diag(vec)·U_N + M·U_P,  W'_P = diag(scale)·U_P,  W'_E = U_E,  rest unchanged;
    bias: b'_N = vec ⊙ b_N + M·b_P,  b'_P = scale ⊙ b_P   (the official fuse forgot the bias)
    mix_channels=False: W'_N = diag(vec)·U_N,  W'_P = M·U_P + diag(scale)·U_P.
row side (o, down; columns), no scale:
    W'_N = U_N·diag(vec) + U_P·Mᵀ,  W'_P = U_P   (False: W'_N = U_N·diag(vec), W'_P = U_P + U_P·Mᵀ).

GQA (method §2, §3): v's unit is a KV head (mixer size n = k·d_h); o's N/P columns hold k groups of
`slots` = rep q heads. o applies the same mixer and vec to each q-head slot r: columns (k, rep, d_h) are
viewed as rep rows of length k·d_h, so q head r of an N group is mixed from q head r of the P groups,
matching the values it reads. For rep = 1 this is the official MHA sharing.

`weight`/`bias` stay the ORIGINAL Parameter objects, so state-dict keys and optimizer references survive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apexlm.apex.expanded_linear import ExpandedLinear, OperatorGroup, from_slots, to_slots


def _cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    return t if t is None or dtype is None else t.to(dtype)


class _Wrapped(ExpandedLinear):
    """The production module's Parameters and bookkeeping (what it holds), with the old full-weight
    forward: W' built whole by `effective()` and one `F.linear` (the math under test is not inherited)."""

    @property
    def span(self) -> int:
        return self.tuned_end

    def effective(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W', b'): the weight and bias this module applies (computed in `dtype` if given)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.effective()
        return F.linear(x, weight, bias)


class ColumnWrapper(_Wrapped):
    """v/up/gate (and s2-only q/k): reparameterised output rows (§3.3, §3.6).

    n_mix rows of N sit at [0, n_mix), P at [n_mix, 2·n_mix), E up to tuned_end. With `shared` None the
    wrapper is the s2-only S2ColumnLinear. s2: (tuned_end, in); mixer_scale: (n_mix,).
    """

    def __init__(self, base: nn.Module, tuned_end: int, n_mix: int, shared: OperatorGroup | None,
                 use_s2: bool, mix_channels: bool = True) -> None:
        s2_shape = (tuned_end, base.weight.shape[1]) if use_s2 else None
        super().__init__(base, tuned_end, s2_shape, shared, mix_channels)
        self.n_mix = n_mix if shared is not None else 0
        if shared is not None:
            if shared.n != n_mix or 2 * n_mix > tuned_end:
                raise ValueError(f"column wrapper: mixer size {shared.n} vs n_mix {n_mix}, tuned {tuned_end}")
            self.mixer_scale = nn.Parameter(torch.ones(n_mix, device=self.weight.device,
                                                       dtype=self.weight.dtype))           # (n,)

    def _mix(self, u_n: torch.Tensor, u_p: torch.Tensor, along: int, dtype: torch.dtype | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (N, P) blocks; `along` = 0 for weight rows (n, in), −1 for bias vectors (n,)."""
        assert self.shared is not None
        vec = _cast(self.shared.mixer_vec, dtype)                             # (n,)
        scale = _cast(self.mixer_scale, dtype)                                # (n,)
        if along == 0:
            m_p = self.shared.mixer(u_p.T).T                                  # (n, in) = M·U_P
            vec, scale = vec[:, None], scale[:, None]
        else:
            m_p = self.shared.mixer(u_p)                                      # (n,) = M·b_P
        if self.mix_channels:
            return vec * u_n + m_p, scale * u_p
        return vec * u_n, m_p + scale * u_p

    def effective(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = _cast(self.weight, dtype)                                         # (out, in)
        b = _cast(self.bias, dtype)                                           # (out,) or None
        te, n = self.tuned_end, self.n_mix
        u = w[:te]                                                            # (tuned_end, in)
        if self.s2 is not None:
            u = u + _cast(self.s2, dtype)
        if self.shared is None:
            return torch.cat([u, w[te:]], dim=0), b
        new_n, new_p = self._mix(u[:n], u[n:2 * n], 0, dtype)
        w_new = torch.cat([new_n, new_p, u[2 * n:], w[te:]], dim=0)           # (out, in)
        if b is not None:
            b_n, b_p = self._mix(b[:n], b[n:2 * n], -1, dtype)
            b = torch.cat([b_n, b_p, b[2 * n:]])
        return w_new, b


class RowWrapper(_Wrapped):
    """o/down: reparameterised input columns (§3.4); s2-only S2RowLinear when `shared` is None.

    N columns [0, c), P [c, 2c), E up to tuned_end, with c = groups·slots·inner: for o, groups = k KV
    groups, slots = rep, inner = d_h; for down, slots = inner = 1. s2: (out, tuned_end). No scale.
    """

    def __init__(self, base: nn.Module, tuned_end: int, groups: int, slots: int, inner: int,
                 shared: OperatorGroup | None, use_s2: bool, mix_channels: bool = True) -> None:
        s2_shape = (base.weight.shape[0], tuned_end) if use_s2 else None
        super().__init__(base, tuned_end, s2_shape, shared, mix_channels)
        self.groups, self.slots, self.inner = (groups, slots, inner) if shared is not None else (0, 1, 1)
        if shared is not None and (shared.n != groups * inner or 2 * groups * slots * inner > tuned_end):
            raise ValueError(f"row wrapper: mixer size {shared.n} vs {groups}×{inner}, tuned {tuned_end}")

    def effective(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = _cast(self.weight, dtype)                                         # (out, in)
        b = _cast(self.bias, dtype)                                           # bias is untouched
        te = self.tuned_end
        u = w[:, :te]                                                         # (out, tuned_end)
        if self.s2 is not None:
            u = u + _cast(self.s2, dtype)
        if self.shared is None:
            return torch.cat([u, w[:, te:]], dim=1), b
        out, g, s, i = w.shape[0], self.groups, self.slots, self.inner
        c = g * s * i
        vec = _cast(self.shared.mixer_vec, dtype)                             # (g·i,)
        u_n = to_slots(u[:, :c], g, s, i)                                     # (out·s, g·i)
        u_p = to_slots(u[:, c:2 * c], g, s, i)                                # (out·s, g·i)
        m_p = self.shared.mixer(u_p)                                          # (out·s, g·i) = U_P·Mᵀ
        if self.mix_channels:
            new_n = from_slots(u_n * vec + m_p, out, g, s, i)
            new_p = u[:, c:2 * c]
        else:
            new_n = from_slots(u_n * vec, out, g, s, i)
            new_p = u[:, c:2 * c] + from_slots(m_p, out, g, s, i)
        return torch.cat([new_n, new_p, u[:, 2 * c:], w[:, te:]], dim=1), b   # (out, in)
