"""The expanded span's algebra done in place: W'_s from U, and dU from dW'_s (method §3.7).

`ExpandedLinear._build` states W'_s = build(U, operator tensors) as plain autograd ops (used by the fold,
analysis and the compiled path). Run eagerly, that form makes a pass over the span per op: a concat to
reassemble N | P | E, zero-filled slice gradients, a copy of the span gradient into the weight gradient.
Here the same map is written with each block updated where it lies, and its pullback by hand; only the
mixer (Monarch, dense, diagonal) is differentiated by autograd, on its own block. With U split into blocks
N, P (n units each) and E, and m = M·U_P (the mixer applied to the P block, in the block's layout):

    mix_channels=True:  W'_N = vec ⊙ U_N + m,   W'_P = scale ⊙ U_P          W'_E = U_E
    mix_channels=False: W'_N = vec ⊙ U_N,       W'_P = scale ⊙ U_P + m
    (row side: no scale, i.e. scale = 1; column side bias: the same map on b as a one-column matrix)

and for G = dL/dW'_s, with `up` = G_N (True) or G_P (False) the gradient reaching m:

    dvec = Σ G_N ⊙ U_N,   dscale = Σ G_P ⊙ U_P,   (dU_P^mix, dfactors) = mixer's vjp at U_P with `up`,
    dU_N = vec ⊙ G_N,     dU_P = scale ⊙ G_P + dU_P^mix,   dU_E = G_E

(sums over every axis but the unit's). dU overwrites G in place, so G can be the weight-gradient buffer
itself. Column side blocks are row ranges [0, n), [n, 2n); row side blocks are column ranges [0, c),
[c, 2c) viewed as (out, groups, slots, inner), with the mixer acting on (out·slots, groups·inner) rows
(the GQA slot layout of `to_slots`); for slots = 1 every view is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SpanLayout:
    """Where N and P sit in a span matrix and how the mixer sees them.

    side "col": blocks are rows, n = units. side "row": blocks are columns, n = groups·slots·inner.
    """

    side: str
    n: int
    groups: int = 1
    slots: int = 1
    inner: int = 1

    def block(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """Block k (0 = N, 1 = P) of t, in the elementwise layout: (n, cols) | (out, groups, slots, inner)."""
        lo, hi = k * self.n, (k + 1) * self.n
        if self.side == "col":
            return t[lo:hi]
        return t[:, lo:hi].unflatten(1, (self.groups, self.slots, self.inner))

    def coef(self, v: torch.Tensor) -> torch.Tensor:
        """A per-unit vector (mixer size) broadcast against a block."""
        if self.side == "col":
            return v[:, None]
        return v.view(1, self.groups, 1, self.inner)

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Σ a ⊙ b over every axis but the unit's: two blocks → (mixer size,).

        `linalg.vecdot` (on this CPU 0.9–1.0× the time of a product and a sum: benchmarks/span_micro.py).
        """
        if self.side == "col":
            return torch.linalg.vecdot(a, b, dim=1)
        return torch.linalg.vecdot(a, b, dim=0).sum(1).reshape(-1)            # (g, s, i) → (g·i,)

    def mixer_in(self, block: torch.Tensor) -> torch.Tensor:
        """Elementwise-layout block → the mixer's input: (n, cols) | (out·slots, groups·inner)."""
        if self.side == "col":
            return block
        return block.permute(0, 2, 1, 3).reshape(-1, self.groups * self.inner)

    def mixer_out(self, m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The mixer's output back in the elementwise layout of `like` (a view; no copy)."""
        if self.side == "col":
            return m
        out = like.shape[0]
        return m.view(out, self.slots, self.groups, self.inner).permute(0, 2, 1, 3)

    def mix(self, mixer: nn.Module, x: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """M applied to a P block given in the mixer's layout: M·U_P (column) | rows·Mᵀ (row).

        The row side runs as (M·xᵀ)ᵀ: the Monarch's block products then read xᵀ's columns as BLAS
        operands in place: 1.6–1.9× faster than regrouping x's rows into blocks, forward and with
        backward, output copy included ((2048, 1056) rows, fp32, one thread; benchmarks/span_micro.py).
        """
        if self.side == "col":
            return mixer.mix_left(x, *factors)
        return mixer.mix_left(x.T, *factors).T.contiguous()     # elementwise ops on a transposed view
        #                       cost 3–4× a blocked copy plus the same op on contiguous rows (span_micro.py)


def _scaled(u: torch.Tensor, c: torch.Tensor | None, out: torch.Tensor, add: torch.Tensor | None) -> None:
    """out = c ⊙ u (+ add); c None means 1. `out` may be `u` itself."""
    if c is None:
        if add is None:
            if out.data_ptr() != u.data_ptr():
                out.copy_(u)
        else:
            torch.add(u, add, out=out)
    elif add is None:
        torch.mul(u, c, out=out)
    else:
        torch.addcmul(add, u, c, out=out)


def finish(lay: SpanLayout, mix_channels: bool, u: torch.Tensor, out: torch.Tensor, m: torch.Tensor,
           vec: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Write W'_N, W'_P into `out` from U's blocks and m = M·U_P (mixer layout); `out` may be `u`.

    The caller has E already in place (out is u, or the span holds only N | P).
    """
    u_n, u_p, o_n, o_p = lay.block(u, 0), lay.block(u, 1), lay.block(out, 0), lay.block(out, 1)
    m = lay.mixer_out(m, o_n)
    dt = u.dtype
    vec_c = lay.coef(vec.to(dt))
    scale_c = None if scale is None else lay.coef(scale.to(dt))
    if mix_channels:
        _scaled(u_p, scale_c, o_p, None)
        _scaled(u_n, vec_c, o_n, m)
    else:
        _scaled(u_p, scale_c, o_p, m)
        _scaled(u_n, vec_c, o_n, None)
    return out


def pullback(lay: SpanLayout, g: torch.Tensor, u: torch.Tensor, vec: torch.Tensor,
             scale: torch.Tensor | None, d_u_p_mix: torch.Tensor | None, need_u: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dvec, dscale) from G and U; then G ← dU in place if `need_u` (d_u_p_mix: the mixer's dU_P).

    Must run before U is overwritten (the coefficient gradients read U).
    """
    g_n, g_p, u_n, u_p = lay.block(g, 0), lay.block(g, 1), lay.block(u, 0), lay.block(u, 1)
    dt = g.dtype
    d_vec = lay.dot(g_n, u_n.to(dt))
    d_scale = None if scale is None else lay.dot(g_p, u_p.to(dt))
    if need_u:
        _scaled(g_n, lay.coef(vec.to(dt)), g_n, None)
        mixed = None if d_u_p_mix is None else lay.mixer_out(d_u_p_mix.to(dt).contiguous(), g_p)
        _scaled(g_p, None if scale is None else lay.coef(scale.to(dt)), g_p, mixed)
    return d_vec, d_scale


def upstream(lay: SpanLayout, mix_channels: bool, g: torch.Tensor) -> torch.Tensor:
    """The gradient reaching m = M·U_P, in the mixer's layout: G_N (True) or G_P (False)."""
    return lay.mixer_in(lay.block(g, 0 if mix_channels else 1))
