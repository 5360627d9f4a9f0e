"""Step-by-step losses of short `apex_it` / `apex_cpt` runs equal the ones recorded before the span
implementation of the expanded linears (benchmarks/ref/, recorded on the weight-side code; ≤ 1e-5 relative).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["apex_it", "apex_cpt"])
def test_losses_match_the_weight_side_recording(experiment: str) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from loss_trace import losses

    ref = json.loads((ROOT / "benchmarks" / "ref" / f"losses_{experiment}.json").read_text())["losses"]
    # the micro model's attention is in low-budget mode; the recording predates the official undrawn-layer
    # default (docs/method.md, differences), so the option that keeps the recorded behaviour is set
    got = losses(experiment, len(ref), ["method.low_budget_undrawn_s2=true"])
    assert len(got) == len(ref)
    assert max(abs(a - b) / abs(b) for a, b in zip(got, ref, strict=True)) <= 1e-5
