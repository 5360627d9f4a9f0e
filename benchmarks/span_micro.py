"""Micro-measurements behind the span algebra's layout choices (method §3.7), on TinyLlama-1.1B's blocks.

    python benchmarks/span_micro.py [--reps 20] [--projections]

One CPU thread, process CPU time, the median-free mean of `--reps` calls after one warm-up, fp32. Blocks:
the FFN's mixed units at APEX IT defaults (n = 1056 of 5632, Monarch 32 blocks of 33) against 2048 columns,
as up/gate (column side) and down (row side) see them. Prints, each with its ratio:

  transposed    an addcmul reading a transposed view vs a blocked copy to contiguous + the same addcmul
  row Monarch   U_P·Mᵀ on rows (`mix`) vs (M·U_Pᵀ)ᵀ (`mix_left` on the transpose), forward and fwd + bwd
  coef grads    Σ G ⊙ U per row: product + sum vs `linalg.vecdot`
  mixer/site    the Monarch work of one mixed site per step: forward mix + the backward's re-run and vjp
  dropped       a hand-written Monarch vjp vs autograd; column-tiled (256) forward products vs whole
  --projections every projection of the 1b-layer proxy alone (fwd + bwd), S2-only vs APEX IT (slow: ~1 min)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from apexlm.apex.monarch import Monarch  # noqa: E402

N, COLS, SPAN = 1056, 2048, 2618


def cpu_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return 1e3 * (time.process_time() - t0) / reps


def _vjp(mon: Monarch, x: torch.Tensor, factors: tuple[torch.Tensor, ...], up: torch.Tensor,
         mix: Callable) -> None:
    leaf = x.detach().requires_grad_()
    fl = [f.detach().requires_grad_() for f in factors]
    m = mix(leaf, fl)
    torch.autograd.grad(m, [leaf, *fl], up)


def _hand_vjp(mon: Monarch, u: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, gm: torch.Tensor) -> None:
    nb, b, cols = mon.nblocks, mon.block, u.shape[1]
    u3 = u.reshape(nb, b, cols)
    h1p = torch.bmm(w1, u3).reshape(b, nb, cols).transpose(0, 1)               # (nb, b, cols)
    gz = gm.reshape(b, nb, cols).transpose(0, 1).contiguous()
    torch.bmm(gz, h1p.transpose(1, 2))                                          # d blkdiag2
    dh1 = torch.bmm(w2.transpose(1, 2), gz).transpose(0, 1).reshape(nb, b, cols)
    torch.bmm(dh1, u3.transpose(1, 2))                                          # d blkdiag1
    torch.bmm(w1.transpose(1, 2), dh1)                                          # d U_P


def run(reps: int) -> list[tuple[str, float, float]]:
    """(what, a ms, b ms) rows; the printed ratio is a / b."""
    g = torch.Generator().manual_seed(0)
    mon = Monarch(N, "random", 1.0, g)
    with torch.no_grad():
        mon.blkdiag2.normal_(generator=g)
    f = tuple(t.detach() for t in mon.factors())
    col = torch.randn(SPAN, COLS, generator=g)              # a column-side span (rows)
    row = torch.randn(COLS, SPAN, generator=g)              # a row-side span (columns)
    u_col, g_col = col[N:2 * N], torch.randn(SPAN, COLS, generator=g)[:N]
    x_row = row[:, N:2 * N]                                 # (2048, n) strided P block
    m_t = torch.randn(N, COLS, generator=g).T               # a transposed (2048, n) view
    vec = torch.randn(N, generator=g)
    out = torch.empty(COLS, SPAN)[:, :N]
    rows: list[tuple[str, float, float]] = []
    with torch.no_grad():
        rows.append(("transposed: addcmul on a transposed view / blocked copy + addcmul",
                     cpu_ms(lambda: torch.addcmul(m_t, x_row, vec, out=out), reps),
                     cpu_ms(lambda: torch.addcmul(m_t.contiguous(), x_row, vec, out=out), reps)))
        rows.append(("row Monarch forward: mix on rows / mix_left on the transpose",
                     cpu_ms(lambda: mon.mix(x_row, *f), reps),
                     cpu_ms(lambda: mon.mix_left(x_row.T, *f).T.contiguous(), reps)))
        rows.append(("coef grads: product + sum / linalg.vecdot",
                     cpu_ms(lambda: (g_col * u_col).sum(1), reps),
                     cpu_ms(lambda: torch.linalg.vecdot(g_col, u_col, dim=1), reps)))
    up_row = torch.randn(COLS, N, generator=g)
    rows.append(("row Monarch fwd + bwd: mix on rows / mix_left on the transpose",
                 cpu_ms(lambda: _vjp(mon, x_row, f, up_row, lambda x, fl: mon.mix(x, *fl)), reps),
                 cpu_ms(lambda: _vjp(mon, x_row, f, up_row,
                                     lambda x, fl: mon.mix_left(x.T, *fl).T.contiguous()), reps)))
    with torch.no_grad():
        fwd = cpu_ms(lambda: mon.mix_left(u_col, *f), reps)
    site = fwd + cpu_ms(lambda: _vjp(mon, u_col, f, g_col, lambda x, fl: mon.mix_left(x, *fl)), reps)
    rows.append(("mixer/site (column): forward mix + backward re-run and vjp / forward mix", site, fwd))
    rows.append(("dropped: autograd Monarch vjp / hand-written",
                 cpu_ms(lambda: _vjp(mon, u_col, f, g_col, lambda x, fl: mon.mix_left(x, *fl)), reps),
                 cpu_ms(lambda: _hand_vjp(mon, u_col, *f, g_col), reps)))

    def tiled() -> None:
        res = torch.empty(N, COLS)
        for j in range(0, COLS, 256):
            res[:, j:j + 256] = mon.mix_left(u_col[:, j:j + 256], *f)

    with torch.no_grad():
        rows.append(("dropped: whole forward mix / column-tiled (256)", fwd, cpu_ms(tiled, reps)))
    return rows


def projections(reps: int) -> list[tuple[str, float, float]]:
    """Each projection of the 1b-layer proxy alone, fwd + bwd: APEX IT vs S2-only (ms, ms)."""
    from layer_bench import LayerRunner

    runners = {v: LayerRunner(v, 1024) for v in ("s2", "apex_it")}
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    times: dict[tuple[str, str], list[float]] = {}
    for i in range(reps + 1):
        for v, r in runners.items():
            for name in names:
                mod = getattr(r.layer.self_attn if name[0] in "qkvo" else r.layer.mlp, name)
                x = torch.randn(1, 1024, mod.in_features).requires_grad_()
                gy = torch.randn(1, 1024, mod.out_features)
                t0 = time.process_time()
                mod(x).backward(gy)
                if i:                                                    # the first pass is the warm-up
                    times.setdefault((v, name), []).append(1e3 * (time.process_time() - t0))
                for p in mod.parameters():
                    p.grad = None
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return [(f"projection {n}: APEX IT / S2-only (median of {reps})", med[("apex_it", n)], med[("s2", n)])
            for n in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--projections", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = run(a.reps) + (projections(max(4, a.reps // 2)) if a.projections else [])
    print(f"span algebra micro-measurements, 1 thread, CPU time, fp32, n = {N}, {COLS} columns")
    for what, x, y in rows:
        print(f"{what:<78} {x:8.2f} ms / {y:8.2f} ms = {x / y:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
