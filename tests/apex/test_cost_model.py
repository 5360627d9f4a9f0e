"""The GPU cost model's counts (benchmarks/gpu_cost_model.py, meta device): a plain layer's matrix-product
FLOPs are 3 GEMMs per projection, and the span form's GEMMs cost what the plain layer's cost (method §3.7)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_counts_match_gemm_formulas_and_span_gemms_equal_plain() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_cost_model as cm

    t = 1024
    plain = cm.count_layer("tinyllama-1.1b", t, "plain")
    cpt = cm.count_layer("tinyllama-1.1b", t, "cpt")
    for name, (d_in, d_out) in {"up": (2048, 5632), "o": (2048, 2048), "k": (2048, 256)}.items():
        mm = sum(f for op, f, _ in plain[name] if op in cm.MATMUL)
        assert abs(mm - 3 * 2 * t * d_in * d_out) < 1e-6 * mm               # fwd, dx, dW
        mm_cpt = sum(f for op, f, _ in cpt[name] if op in cm.MATMUL)
        assert mm <= mm_cpt <= 1.02 * mm                                   # + the Monarch factors only
    assert any(op == "flash_attention" for op, _, _ in plain["layer"])
    assert cm.roofline_s(cpt["layer"], "h100") > cm.roofline_s(plain["layer"], "h100") > 0


def test_fused_bound_merges_elementwise_runs_and_keeps_products() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_cost_model as cm

    a, b, tmp, out = (1, 400), (2, 400), (3, 400), (4, 400)
    trace = [cm.Access("mul", 100.0, [a, b], [tmp]), cm.Access("add", 100.0, [tmp, a], [out]),
             cm.Access("mm", 5.0, [out, b], [(5, 40)]), cm.Access("barrier", 0.0, [], []),
             cm.Access("neg", 1.0, [out], [(6, 400)])]
    fused = cm.fused_ops(trace)
    assert [op for op, _, _ in fused] == ["fused[mul,add]", "mm", "fused[neg]"]
    assert fused[0][2] == 400 + 400 + 400               # reads a and b once, writes out; tmp stays inside
    assert fused[1] == ("mm", 5.0, 840.0)
    t = 4096
    for variant in ("plain", "cpt"):                    # fusing never adds bytes and keeps every product
        eager = cm.count_layer("tinyllama-1.1b", t, variant)["layer"]
        bound = cm.count_layer("tinyllama-1.1b", t, variant + "-fused")["layer"]
        assert cm._sum(bound)[1] < cm._sum(eager)[1]
        mm = [f for op, f, _ in eager if op in cm.MATMUL]
        assert sorted(f for op, f, _ in bound if op in cm.MATMUL) == sorted(mm)
