"""95 % t-intervals of the sweep report's paired deltas (the seed study's tables, docs/results.md)."""

import math

import pytest

from apexlm.analysis.report.stats import Delta, t975, t_interval
from apexlm.analysis.report.tables import deltas_table


def test_t_quantiles_match_the_tabulated_values():
    assert t975(1) == pytest.approx(12.706) and t975(7) == pytest.approx(2.365)
    assert t975(40) == pytest.approx(2.021, abs=0.002) and t975(120) == pytest.approx(1.980, abs=0.002)
    assert math.isnan(t975(0))


def test_t_interval_of_known_values():
    m, hw, n = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])       # s = 1.5811, se = 0.7071, t(4) = 2.776
    assert (m, n) == (3.0, 5) and hw == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(t_interval([1.0])[1]) and t_interval([2.0, float("nan"), 4.0])[2] == 2


def test_paired_delta_prints_its_interval():
    pairs = {1: -1.0, 2: -2.0, 3: -3.0}
    d = Delta(delta=-2.0, pooled_std=1.0, paired=-2.0, paired_std=1.0, pairs=pairs, n_variant=3, n_control=3)
    assert d.ci95 == pytest.approx(4.303 / math.sqrt(3))
    row = deltas_table("final val ppl", "ctl", {"x": d})[2]
    assert "95 % CI [-4.48, +0.484]" in row
