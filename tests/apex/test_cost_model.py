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
