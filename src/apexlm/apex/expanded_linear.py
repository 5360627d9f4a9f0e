"""Expanded linear modules: method §3.2–§3.7 (and §3.5 sharing), with biases and GQA.

The tuned span [0, tuned_end) of the permuted layout holds N | P | E (§2). With U = W[tuned] + s2:

column side (v, up, gate; rows, weight (out, in)), mix_channels=True:
    W'_N = diag(vec)·U_N + M·U_P,  W'_P = diag(scale)·U_P,  W'_E = U_E,  rest unchanged;
    bias: b'_N = vec ⊙ b_N + M·b_P,  b'_P = scale ⊙ b_P   (the official fuse forgot the bias)
    mix_channels=False: W'_N = diag(vec)·U_N,  W'_P = M·U_P + diag(scale)·U_P.
row side (o, down; columns), no scale:
    W'_N = U_N·diag(vec) + U_P·Mᵀ,  W'_P = U_P   (False: W'_N = U_N·diag(vec), W'_P = U_P + U_P·Mᵀ).

Cost (method §3.7): only the span that differs from the base is built — the tuned rows/columns when s2
exists (IT), else the 2n mixed ones (CPT) — and `SpanLinear` runs the GEMMs on it and on views of the
untouched rest, with weight gradients only where weights train; eagerly the span's algebra runs in place
(`span_algebra.py`), under torch.compile as plain ops (`_build`, `forward_traceable`). `effective()` still
returns the full (W', b'), for the fold (§4) and analysis.

GQA (method §2, §3): v's unit is a KV head (mixer size n = k·d_h); o's N/P columns hold k groups of
`slots` = rep q heads. o applies the same mixer and vec to each q-head slot r: columns (k, rep, d_h) are
viewed as rep rows of length k·d_h, so q head r of an N group is mixed from q head r of the P groups,
matching the values it reads. For rep = 1 this is the official MHA sharing.

`weight`/`bias` stay the ORIGINAL Parameter objects, so state-dict keys and optimizer references survive;
no Parameter is ever created or removed after construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apexlm.apex.span_algebra import SpanLayout
from apexlm.apex.span_matmul import SpanLinear


class OperatorGroup(nn.Module):
    """The operator shared by one layer's (v, o) or (up, gate, down) projections (§3.1, §3.2, §3.5).

    mixer: M acting on length-n rows; mixer_vec (n,): per-dimension scale on N, ones at init.
    """

    def __init__(self, n: int, mixer: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.n = n
        self.mixer = mixer
        self.mixer_vec = nn.Parameter(torch.ones(n, device=device, dtype=dtype))          # (n,)

    def reset_(self, gen: torch.Generator | None) -> None:
        """Back to the identity operator: M re-initialised (M = 0 except `noise`), vec = 1."""
        self.mixer.reset_(gen)
        with torch.no_grad():
            self.mixer_vec.fill_(1.0)


def _cast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    return t if t is None or dtype is None else t.to(dtype)


class ExpandedLinear(nn.Module):
    """Common part: the original weight/bias Parameters, an optional s2 and a shared operator.

    Subclasses define `side` ("col" / "row"), `span` (leading rows/columns that differ from the base),
    `_ops()` (the operator tensors, in `_build`'s order) and `_build(w_span, b_span, *ops)`.
    """

    side = "col"

    def __init__(self, base: nn.Module, tuned_end: int, s2_shape: tuple[int, int] | None,
                 shared: OperatorGroup | None, mix_channels: bool) -> None:
        super().__init__()
        self.weight = base.weight                                   # same Parameter object
        self.bias = base.bias if getattr(base, "bias", None) is not None else None
        self.out_features, self.in_features = self.weight.shape
        self.tuned_end = tuned_end
        self.mix_channels = mix_channels
        self.shared = shared
        self.s2 = None
        if s2_shape is not None:
            self.s2 = nn.Parameter(torch.zeros(s2_shape, device=self.weight.device, dtype=self.weight.dtype))

    @property
    def span(self) -> int:
        """How many leading rows (column side) / columns (row side) of W' differ from W."""
        raise NotImplementedError

    @property
    def layout(self) -> SpanLayout:
        """Where N and P sit in the span (span_algebra), for the in-place eager path."""
        raise NotImplementedError

    def _ops(self) -> tuple[torch.Tensor | None, ...]:
        raise NotImplementedError

    def _build(self, w: torch.Tensor, b: torch.Tensor | None, *ops: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _mixer_ops(self) -> tuple[torch.Tensor, ...]:
        return () if self.shared is None else tuple(self.shared.mixer.factors())

    def effective(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W', b'): the full weight and bias this module applies (computed in `dtype` if given)."""
        w, b, s = _cast(self.weight, dtype), _cast(self.bias, dtype), self.span
        ops = tuple(_cast(t, dtype) for t in self._ops())
        if self.side == "col":
            w_s, b_s = self._build(w[:s], None if b is None else b[:s], *ops)
            if b is not None and self.shared is not None:
                b = torch.cat([b_s, b[s:]])
            return torch.cat([w_s, w[s:]], dim=0), b
        w_s, _ = self._build(w[:, :s], None, *ops)
        return torch.cat([w_s, w[:, s:]], dim=1), b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.span == 0:
            return F.linear(x, self.weight, self.bias)
        if torch.compiler.is_compiling():
            return self.forward_traceable(x)
        return SpanLinear.apply(self, x, self.weight, self.bias, *self._ops())

    def forward_traceable(self, x: torch.Tensor) -> torch.Tensor:
        """The same split with plain autograd ops, for a compiled graph (method §3.7).

        `SpanLinear` writes GEMMs into strided views and differentiates the build inside its backward,
        which the compiler does not trace; here the compiler sees slices, two GEMMs and a concat (or a
        sum) and fuses the slice-gradient bookkeeping itself.
        """
        w, b, s = self.weight, self.bias, self.span
        if self.side == "col":
            w_s, b_s = self._build(w[:s], None if b is None else b[:s], *self._ops())
            rest = F.linear(x, w[s:], None if b is None else b[s:])                  # (..., out − s)
            return torch.cat([F.linear(x, w_s, b_s), rest], dim=-1)                  # (..., out)
        w_s, _ = self._build(w[:, :s], None, *self._ops())
        return F.linear(x[..., :s], w_s) + F.linear(x[..., s:], w[:, s:], b)        # (..., out)

    def own_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by this wrapper alone (not the shared operator)."""
        return [p for p in (self.s2, getattr(self, "mixer_scale", None)) if p is not None]

    def reset_own_(self) -> None:
        """s2 = 0, scale = 1 (the identity state)."""
        with torch.no_grad():
            if self.s2 is not None:
                self.s2.zero_()
            scale = getattr(self, "mixer_scale", None)
            if scale is not None:
                scale.fill_(1.0)

    def extra_repr(self) -> str:
        s2 = None if self.s2 is None else tuple(self.s2.shape)
        return (f"in={self.in_features}, out={self.out_features}, tuned_end={self.tuned_end}, "
                f"mixed={self.shared is not None}, s2={s2}, span={self.span}")


class ColumnWrapper(ExpandedLinear):
    """v/up/gate (and s2-only q/k): reparameterised output rows (§3.3, §3.6).

    n_mix rows of N sit at [0, n_mix), P at [n_mix, 2·n_mix), E up to tuned_end. With `shared` None the
    wrapper is the s2-only S2ColumnLinear. s2: (tuned_end, in); mixer_scale: (n_mix,).
    """

    side = "col"

    def __init__(self, base: nn.Module, tuned_end: int, n_mix: int, shared: OperatorGroup | None,
                 use_s2: bool, mix_channels: bool = True) -> None:
        s2_shape = (tuned_end, base.weight.shape[1]) if use_s2 else None
        super().__init__(base, tuned_end, s2_shape, shared, mix_channels)
        self.n_mix = n_mix if shared is not None else 0
        self.mixer_scale = None
        if shared is not None:
            if shared.n != n_mix or 2 * n_mix > tuned_end:
                raise ValueError(f"column wrapper: mixer size {shared.n} vs n_mix {n_mix}, tuned {tuned_end}")
            self.mixer_scale = nn.Parameter(torch.ones(n_mix, device=self.weight.device,
                                                       dtype=self.weight.dtype))           # (n,)

    @property
    def span(self) -> int:
        return self.tuned_end if self.s2 is not None else 2 * self.n_mix

    @property
    def layout(self) -> SpanLayout:
        return SpanLayout("col", self.n_mix)

    def _ops(self) -> tuple[torch.Tensor | None, ...]:
        vec = None if self.shared is None else self.shared.mixer_vec
        return (self.s2, vec, self.mixer_scale, *self._mixer_ops())

    def _mix(self, u_n: torch.Tensor, u_p: torch.Tensor, vec: torch.Tensor, scale: torch.Tensor,
             factors: tuple[torch.Tensor, ...], rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """New (N, P) blocks: weight rows (n, in) when `rows`, else bias vectors (n,)."""
        assert self.shared is not None
        vec, scale = vec.to(u_n.dtype), scale.to(u_n.dtype)                 # (n,)
        mixer = self.shared.mixer
        if rows:
            m_p = mixer.mix_left(u_p, *factors)                                # (n, in) = M·U_P
            vec, scale = vec[:, None], scale[:, None]
        else:
            m_p = mixer.mix(u_p, *factors)                                     # (n,) = M·b_P
        if self.mix_channels:
            return vec * u_n + m_p, scale * u_p
        return vec * u_n, m_p + scale * u_p

    def _build(self, w: torch.Tensor, b: torch.Tensor | None, s2: torch.Tensor | None = None,
               vec: torch.Tensor | None = None, scale: torch.Tensor | None = None, *factors: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """w (span, in), b (span,) → (W'_span, b'_span); span = tuned_end with s2, else 2·n_mix."""
        u = w if s2 is None else w + s2.to(w.dtype)                            # (span, in)
        if self.shared is None:
            return u, b
        n = self.n_mix
        sizes = [n, n, u.shape[0] - 2 * n]        # split, not slices: its backward is one concat, not
        u_n, u_p, u_e = u.split(sizes)            # a zero-filled span-size tensor per slice
        new_n, new_p = self._mix(u_n, u_p, vec, scale, factors, True)
        w_new = torch.cat([new_n, new_p, u_e], dim=0)                         # (span, in)
        if b is not None:
            b_n, b_p, b_e = b.split(sizes)
            b_n, b_p = self._mix(b_n, b_p, vec, scale, factors, False)
            b = torch.cat([b_n, b_p, b_e])
        return w_new, b


def to_slots(u: torch.Tensor, groups: int, slots: int, inner: int) -> torch.Tensor:
    """(out, groups·slots·inner) columns → (out·slots, groups·inner) rows, slot-major (GQA o side)."""
    out = u.shape[0]
    return u.reshape(out, groups, slots, inner).permute(0, 2, 1, 3).reshape(out * slots, groups * inner)


def from_slots(r: torch.Tensor, out: int, groups: int, slots: int, inner: int) -> torch.Tensor:
    """Inverse of `to_slots`: (out·slots, groups·inner) → (out, groups·slots·inner)."""
    return r.reshape(out, slots, groups, inner).permute(0, 2, 1, 3).reshape(out, groups * slots * inner)


class RowWrapper(ExpandedLinear):
    """o/down: reparameterised input columns (§3.4); s2-only S2RowLinear when `shared` is None.

    N columns [0, c), P [c, 2c), E up to tuned_end, with c = groups·slots·inner: for o, groups = k KV
    groups, slots = rep, inner = d_h; for down, slots = inner = 1. s2: (out, tuned_end). No scale.
    """

    side = "row"

    def __init__(self, base: nn.Module, tuned_end: int, groups: int, slots: int, inner: int,
                 shared: OperatorGroup | None, use_s2: bool, mix_channels: bool = True) -> None:
        s2_shape = (base.weight.shape[0], tuned_end) if use_s2 else None
        super().__init__(base, tuned_end, s2_shape, shared, mix_channels)
        self.groups, self.slots, self.inner = (groups, slots, inner) if shared is not None else (0, 1, 1)
        if shared is not None and (shared.n != groups * inner or 2 * groups * slots * inner > tuned_end):
            raise ValueError(f"row wrapper: mixer size {shared.n} vs {groups}×{inner}, tuned {tuned_end}")

    @property
    def span(self) -> int:
        return self.tuned_end if self.s2 is not None else 2 * self.groups * self.slots * self.inner

    @property
    def layout(self) -> SpanLayout:
        return SpanLayout("row", self.groups * self.slots * self.inner, self.groups, self.slots, self.inner)

    def _ops(self) -> tuple[torch.Tensor | None, ...]:
        vec = None if self.shared is None else self.shared.mixer_vec
        return (self.s2, vec, *self._mixer_ops())

    def _build(self, w: torch.Tensor, b: torch.Tensor | None, s2: torch.Tensor | None = None,
               vec: torch.Tensor | None = None, *factors: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """w (out, span) → (W'_span, None); the row side's bias is untouched."""
        u = w if s2 is None else w + s2.to(w.dtype)                            # (out, span)
        if self.shared is None:
            return u, None
        out, g, s, i = w.shape[0], self.groups, self.slots, self.inner
        c = g * s * i
        vec = vec.to(u.dtype)                                                  # (g·i,)
        u_n, u_p, u_e = u.split([c, c, u.shape[1] - 2 * c], dim=1)            # (out, c), (out, c), (out, e)
        m_p = self.shared.mixer.mix(to_slots(u_p, g, s, i), *factors)          # (out·s, g·i) = U_P·Mᵀ
        if self.mix_channels:
            new_n, new_p = from_slots(to_slots(u_n, g, s, i) * vec + m_p, out, g, s, i), u_p
        else:
            new_n = from_slots(to_slots(u_n, g, s, i) * vec, out, g, s, i)
            new_p = u_p + from_slots(m_p, out, g, s, i)
        return torch.cat([new_n, new_p, u_e], dim=1), None                    # (out, span)
