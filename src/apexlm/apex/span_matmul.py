"""One linear layer whose weight differs from its base Parameter only on a leading span (method §3.7).

The expanded projections change only the first `span` rows (column side: v, up, gate, s2-only q/k) or
columns (row side: o, down) of the weight; everything past the span is the base weight itself. So:

    column side: y[:, :s] = x·W'_sᵀ (+ b'_s),  y[:, s:] = x·W[s:]ᵀ (+ b[s:])   both GEMMs write into one y
    row side:    y = x[:, :s]·W'_sᵀ + x[:, s:]·W[:, s:]ᵀ (+ b)                 the second accumulates in y

with W'_s = build(W_s, operator tensors) built from the span alone. The GEMMs together cost exactly the
plain layer's; nothing of the weight's size is copied, and the backward (below) computes the weight
gradient only where the weight trains, writing every piece in place into one full-size gradient:

    G = dW'_s = g_sᵀ·x (column) or gᵀ·x_s (row), written into the weight-gradient buffer itself when the
        base trains, and turned into dU in place by span_algebra's hand-written pull-back (only the
        mixer is differentiated by autograd, re-run on its P block: nothing of the span is kept
        between forward and backward, no extra activations);
    dW[s:] (or dW[:, s:]) = the plain GEMM, only if the base weight requires grad (CPT);
    dx = the plain GEMM, split at the span like the forward.

Under autocast the GEMMs run in the autocast dtype (as `F.linear` would), the build in the Parameters'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

import torch

from apexlm.apex import span_algebra as algebra


class SpanModule(Protocol):
    """What the span matmul reads from an expanded linear (apex/expanded_linear.py)."""

    side: str
    mix_channels: bool
    shared: torch.nn.Module | None          # its `.mixer` has mix / mix_left

    @property
    def span(self) -> int: ...

    @property
    def layout(self) -> algebra.SpanLayout: ...


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def _no_autocast(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on t's device (the GEMMs get explicit dtypes); nothing where autocast does not exist."""
    dev = t.device.type
    return torch.autocast(dev, enabled=False) if torch.amp.is_autocast_available(dev) else contextlib.nullcontext()


def _span(t: torch.Tensor | None, side: str, s: int, rest: bool = False) -> torch.Tensor | None:
    """The span (or the rest) of a weight along the expanded dimension: rows (column side) / columns."""
    if t is None:
        return None
    if side == "col" or t.dim() == 1:
        return t[s:] if rest else t[:s]
    return t[:, s:] if rest else t[:, :s]


class _Ops:
    """The operator tensors of one call, by role: (s2, vec[, scale], *factors) as `ExpandedLinear._ops`."""

    def __init__(self, mod: SpanModule, ops: Sequence[torch.Tensor | None]) -> None:
        k = 2 if mod.side == "col" else 1
        self.s2, self.vec = ops[0], ops[1]
        self.scale = ops[2] if k == 2 else None
        self.factors = tuple(ops[1 + k:])
        self.n_coef = k


def _u(w_s: torch.Tensor, s2: torch.Tensor | None) -> torch.Tensor:
    """U = W_s + s2 (a fresh tensor), or the weight's own span when there is no s2."""
    return w_s if s2 is None else w_s + s2.to(w_s.dtype)


def _mixed(mod: SpanModule, lay: algebra.SpanLayout, u: torch.Tensor, m: torch.Tensor, op: _Ops
           ) -> torch.Tensor:
    """W'_s from U and m = M·U_P: in place when U is a fresh tensor, else into a new one."""
    out = u if op.s2 is not None else torch.empty_like(u)
    if out is not u and u.shape[0 if mod.side == "col" else 1] > 2 * lay.n:
        _span(out, mod.side, 2 * lay.n, rest=True).copy_(_span(u, mod.side, 2 * lay.n, rest=True))
    return algebra.finish(lay, mod.mix_channels, u, out, m, op.vec, op.scale)


def span_value(mod: SpanModule, w_s: torch.Tensor, b_s: torch.Tensor | None,
               ops: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W'_s, b'_s) without autograd: the span the module applies (b'_s only on the column side)."""
    op = _Ops(mod, ops)
    u = _u(w_s, op.s2)
    if mod.shared is None:
        return u, b_s
    lay, mixer = mod.layout, mod.shared.mixer
    m = lay.mix(mixer, lay.mixer_in(lay.block(u, 1)), op.factors)
    w_new = _mixed(mod, lay, u, m, op)
    if b_s is not None:
        bu = b_s[:, None].clone()                                            # (span, 1)
        mb = lay.mix(mixer, lay.block(bu, 1), op.factors)
        b_s = algebra.finish(lay, mod.mix_channels, bu, bu, mb, op.vec, op.scale)[:, 0]
    return w_new, b_s


class SpanLinear(torch.autograd.Function):
    """y = x·W'ᵀ + b' with W' = W outside the leading span; see the module docstring for the algebra.

    apply(mod, x, weight, bias, *ops): mod is the ExpandedLinear (its span, layout and mixer); ops are
    its operator tensors (`_ops()`, None allowed), passed so autograd sees them as inputs.
    """

    @staticmethod
    def forward(ctx, mod: SpanModule, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, *ops: torch.Tensor | None) -> torch.Tensor:
        side, s = mod.side, mod.span
        cdt = _compute_dtype(x, weight)
        with torch.no_grad():
            w_s, b_s = span_value(mod, _span(weight, side, s), _span(bias, side, s) if side == "col" else None,
                                  ops)
        with _no_autocast(x):
            x2 = x.reshape(-1, x.shape[-1]).to(cdt)                                  # (R, in)
            out = weight.shape[0]
            w_s, rest = w_s.to(cdt), _span(weight, side, s, rest=True).to(cdt)
            if side == "col":
                y = torch.empty(x2.shape[0], out, dtype=cdt, device=x.device)        # (R, out)
                _mm(x2, w_s.T, y[:, :s], None if b_s is None else b_s.to(cdt))
                _mm(x2, rest.T, y[:, s:], None if bias is None else bias[s:].to(cdt))
            else:
                y = _mm(x2[:, :s], w_s.T, None, None if bias is None else bias.to(cdt))   # (R, out)
                y.addmm_(x2[:, s:], rest.T)
        ctx.mod, ctx.cdt, ctx.x_shape, ctx.x_dtype = mod, cdt, x.shape, x.dtype
        ctx.save_for_backward(x2, weight, bias, *ops)
        return y.reshape(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight, bias, *ops = ctx.saved_tensors
        mod, cdt = ctx.mod, ctx.cdt
        side, s = mod.side, mod.span
        need_x, need_w, need_b, *need_ops = ctx.needs_input_grad[1:]
        op = _Ops(mod, ops)
        need_s2 = op.s2 is not None and need_ops[0]
        need_u = need_w or need_s2
        # the span's bias enters the operator gradients too (b'_N = vec ⊙ b_N + M·b_P), not only db
        bias_span = bias is not None and side == "col" and (need_b or (mod.shared is not None and any(need_ops)))
        g = grad.reshape(-1, grad.shape[-1]).to(cdt)                                 # (R, out)
        g_s = g[:, :s] if side == "col" else g                                       # (R, s) | (R, out)
        x_s = x2 if side == "col" else x2[:, :s]                                     # (R, in) | (R, s)
        dw = torch.empty_like(weight) if need_w else None
        u = _u(_span(weight, side, s), op.s2)                                        # (s, in) | (out, s)
        op_grads: list[torch.Tensor | None] = [None] * len(ops)
        gw = None
        gb = None
        with _no_autocast(g):
            if need_u or any(need_ops):
                gw = _span(dw, side, s) if need_w else torch.empty_like(u)          # dL/dW'_s, then dU
                _mm(g_s.T, x_s, gw, None)
            if bias_span:
                gb = g_s.sum(0).to(bias.dtype)[:, None]                              # (s, 1)
            if mod.shared is not None:
                w_s = _mixed_backward(mod, op, u, bias, gw, gb, need_u, need_b, need_ops, op_grads)
            else:
                w_s = u
            if need_x:
                dx = _dx(g, w_s.to(cdt), _span(weight, side, s, rest=True).to(cdt), side, s)
                dx = dx.reshape(ctx.x_shape).to(ctx.x_dtype)
            else:
                dx = None
            if need_w:
                x_r = x2 if side == "col" else x2[:, s:]
                g_r = g[:, s:] if side == "col" else g
                _mm(g_r.T, x_r, _span(dw, side, s, rest=True), None)
            if need_s2:
                op_grads[0] = (gw.clone() if need_w else gw).to(op.s2.dtype)
            db = None
            if need_b and bias is not None:
                if side == "col":
                    db = torch.empty_like(bias)
                    db[:s].copy_(gb[:, 0])
                    db[s:].copy_(g[:, s:].sum(0))
                else:
                    db = g.sum(0).to(bias.dtype)
        return (None, dx, dw, db, *op_grads)


def _mixed_backward(mod: SpanModule, op: _Ops, u: torch.Tensor, bias: torch.Tensor | None,
                    gw: torch.Tensor | None, gb: torch.Tensor | None, need_u: bool, need_b: bool,
                    need_ops: Sequence[bool], op_grads: list[torch.Tensor | None]) -> torch.Tensor:
    """Operator gradients into op_grads, gw/gb ← dU/db_span in place; returns W'_s (for the input grad).

    The mixer is re-run on U_P under autograd (nothing of the span was kept from the forward) and
    differentiated there; everything else is the hand-written pullback of span_algebra.
    """
    lay, mixer, side = mod.layout, mod.shared.mixer, mod.side
    k = op.n_coef
    need_f = need_ops[1 + k:]
    bu = None if gb is None else _span(bias, side, mod.span)[:, None]                  # (s, 1)
    with torch.enable_grad():
        leaves_f = [f.detach().requires_grad_(n) for f, n in zip(op.factors, need_f, strict=True)]
        u_leaf = lay.mixer_in(lay.block(u, 1)).detach().requires_grad_(need_u)
        m = lay.mix(mixer, u_leaf, leaves_f)
        outs, gouts, ins = [], [], [u_leaf] if need_u else []
        if gw is not None:
            outs.append(m)
            gouts.append(algebra.upstream(lay, mod.mix_channels, gw))
        if bu is not None:
            b_leaf = lay.block(bu, 1).detach().requires_grad_(need_b)
            mb = lay.mix(mixer, b_leaf, leaves_f)
            outs.append(mb)
            gouts.append(algebra.upstream(lay, mod.mix_channels, gb))
            if need_b:
                ins.append(b_leaf)
        ins += [f for f in leaves_f if f.requires_grad]
        pairs = [(o, g) for o, g in zip(outs, gouts, strict=True) if o.requires_grad]
        got = [None] * len(ins)
        if pairs and ins:
            got = list(torch.autograd.grad([o for o, _ in pairs], ins, [g for _, g in pairs], allow_unused=True))
    d_u_mix = got.pop(0) if need_u and gw is not None else None
    d_b_mix = got.pop(0) if bu is not None and need_b else None
    d_f = iter(got)
    d_vec = d_scale = None
    if gw is not None:
        d_vec, d_scale = algebra.pullback(lay, gw, u, op.vec, op.scale, d_u_mix, need_u)
    if gb is not None:
        bv, bs = algebra.pullback(lay, gb, bu, op.vec, op.scale, d_b_mix, need_b)
        d_vec = bv if d_vec is None else d_vec + bv
        d_scale = bs if d_scale is None else d_scale + bs                     # both sides of a column
    if need_ops[1]:
        op_grads[1] = d_vec
    if k == 2 and need_ops[2]:
        op_grads[2] = d_scale
    for i, n in enumerate(need_f):
        if n:
            op_grads[1 + k + i] = next(d_f, None)
    return _mixed(mod, lay, u, m.detach(), op)


def _dx(g: torch.Tensor, w_s: torch.Tensor, rest: torch.Tensor, side: str, s: int) -> torch.Tensor:
    """dL/dx = g·W' split at the span like the forward: (R, in)."""
    if side == "col":
        dx = g[:, :s] @ w_s
        dx.addmm_(g[:, s:], rest)
        return dx
    dx = torch.empty(g.shape[0], w_s.shape[1] + rest.shape[1], dtype=g.dtype, device=g.device)
    _mm(g, w_s, dx[:, :s], None)
    _mm(g, rest, dx[:, s:], None)
    return dx


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None, bias: torch.Tensor | None
        ) -> torch.Tensor:
    """a·b (+ bias), written into `out` (a strided view of a larger matrix is fine) when given.

    An `out` of another dtype (fp32 gradient of a bf16 GEMM) gets the product cast into it.
    """
    if out is not None and out.dtype != a.dtype:
        res = a @ b if bias is None else torch.addmm(bias, a, b)
        out.copy_(res)
        return out
    if out is None:
        return a @ b if bias is None else torch.addmm(bias, a, b)
    if bias is None:
        return torch.mm(a, b, out=out)
    return torch.addmm(bias, a, b, out=out)
