"""One linear layer whose weight differs from its base Parameter only on a leading span (method §3.7).

The expanded projections change only the first `span` rows (column side: v, up, gate, s2-only q/k) or
columns (row side: o, down) of the weight; everything past the span is the base weight itself. So:

    column side: y[:, :s] = x·W'_sᵀ (+ b'_s),  y[:, s:] = x·W[s:]ᵀ (+ b[s:])   both GEMMs write into one y
    row side:    y = x[:, :s]·W'_sᵀ + x[:, s:]·W[:, s:]ᵀ (+ b)                 the second accumulates in y

with W'_s = build(W_s, operator tensors) built from the span alone. The GEMMs together cost exactly the
plain layer's; nothing of the weight's size is copied, and the backward (below) computes the weight
gradient only where the weight trains, writing every piece in place into one full-size gradient:

    dW'_s = g_sᵀ·x (column) or gᵀ·x_s (row), pulled back through `build` by autograd on the span only
        (the build is re-run there: W'_s is not kept between forward and backward, no extra activations);
    dW[s:] (or dW[:, s:]) = the plain GEMM, only if the base weight requires grad (CPT);
    dx = the plain GEMM, split at the span like the forward.

Under autocast the GEMMs run in the autocast dtype (as `F.linear` would), the build in the Parameters'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

Build = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


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


def _rebuild(build: Build, side: str, s: int, weight: torch.Tensor, bias: torch.Tensor | None,
             ops: Sequence[torch.Tensor | None], needs: Sequence[bool]
             ) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor | None]:
    """Leaves (span of W, span of b, ops) detached with requires_grad where needed, and build(leaves)."""
    def leaf(t: torch.Tensor | None, need: bool) -> torch.Tensor | None:
        return None if t is None else t.detach().requires_grad_(need)

    b_span = _span(bias, side, s) if side == "col" else None
    leaves = [leaf(_span(weight, side, s), needs[0]), leaf(b_span, needs[1])]
    leaves += [leaf(t, n) for t, n in zip(ops, needs[2:], strict=True)]
    w_s, b_s = build(leaves[0], leaves[1], *leaves[2:])
    return leaves, w_s, b_s


class SpanLinear(torch.autograd.Function):
    """y = x·W'ᵀ + b' with W' = W outside the leading span; see the module docstring for the algebra.

    apply(build, side, span, x, weight, bias, *ops): build(w_span, b_span, *ops) → (W'_s, b'_s) (b'_s
    None on the row side, whose bias is untouched); ops are the operator tensors (None allowed).
    """

    @staticmethod
    def forward(ctx, build: Build, side: str, s: int, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, *ops: torch.Tensor | None) -> torch.Tensor:
        cdt = _compute_dtype(x, weight)
        with torch.no_grad():
            w_s, b_s = build(_span(weight, side, s), _span(bias, side, s) if side == "col" else None, *ops)
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
        ctx.build, ctx.side, ctx.s, ctx.cdt, ctx.x_shape, ctx.x_dtype = build, side, s, cdt, x.shape, x.dtype
        ctx.n_ops = len(ops)
        ctx.save_for_backward(x2, weight, bias, *ops)
        return y.reshape(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight, bias, *ops = ctx.saved_tensors
        side, s, cdt = ctx.side, ctx.s, ctx.cdt
        need = ctx.needs_input_grad[3:]                  # x, weight, bias, *ops
        g = grad.reshape(-1, grad.shape[-1]).to(cdt)                                 # (R, out)
        span_need = [need[1], need[2] and side == "col", *need[3:]]
        with torch.enable_grad():
            leaves, w_s, b_s = _rebuild(ctx.build, side, s, weight, bias, ops, span_need)
        with _no_autocast(g):
            rest = _span(weight, side, s, rest=True).to(cdt)
            w_c = w_s.detach().to(cdt)
            g_s = g[:, :s] if side == "col" else g                                   # (R, s) | (R, out)
            dx = None
            if need[0]:
                if side == "col":
                    dx = g_s @ w_c                                                   # (R, in)
                    dx.addmm_(g[:, s:], rest)
                else:
                    dx = torch.empty(g.shape[0], weight.shape[1], dtype=cdt, device=g.device)
                    _mm(g, w_c, dx[:, :s], None)
                    _mm(g, rest, dx[:, s:], None)
                dx = dx.reshape(ctx.x_shape).to(ctx.x_dtype)
            span_grads: list[torch.Tensor | None] = [None] * len(leaves)
            if any(span_need):
                x_s = x2 if side == "col" else x2[:, :s]
                dws = (g_s.T @ x_s).to(w_s.dtype)                                    # (s, in) | (out, s)
                outs, gouts = [w_s], [dws]
                if b_s is not None and b_s.requires_grad:
                    outs.append(b_s)
                    gouts.append(g_s.sum(0).to(b_s.dtype))
                wanted = [i for i, t in enumerate(leaves) if t is not None and t.requires_grad]
                got = torch.autograd.grad(outs, [leaves[i] for i in wanted], gouts, allow_unused=True)
                for i, t in zip(wanted, got, strict=True):
                    span_grads[i] = t
            dw = None
            if need[1]:
                dw = torch.empty_like(weight)
                _span(dw, side, s).copy_(span_grads[0])
                x_r = x2 if side == "col" else x2[:, s:]
                g_r = g[:, s:] if side == "col" else g
                _mm(g_r.T, x_r, _span(dw, side, s, rest=True), None)
            db = None
            if need[2] and bias is not None:
                if side == "col":
                    db = torch.empty_like(bias)
                    db[:s].copy_(span_grads[1])
                    db[s:].copy_(g[:, s:].sum(0))
                else:
                    db = g.sum(0).to(bias.dtype)
        op_grads = [span_grads[2 + i] if need[3 + i] else None for i in range(ctx.n_ops)]
        return (None, None, None, dx, dw, db, *op_grads)


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
