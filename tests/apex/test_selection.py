"""P/N/E selection, sizes, ties and config errors (method §2)."""

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from apexlm.apex.selection import (
    UnitPlan,
    attention_plans,
    low_budget,
    low_budget_layers,
    select_units,
    unit_plan,
)
from apexlm.errors import ConfigError
from tests.support.models import llama


def _sel(scores, k, tuned, mode="activation", seed=0):
    values = torch.as_tensor(scores, dtype=torch.float32)
    return select_units(values, UnitPlan(k, tuned), mode, seed, 0, 0, "ffn")


def test_sets_sizes_order_and_disjointness():
    scores = torch.tensor([5.0, -3.0, 9.0, 0.0, 7.0, -8.0, 1.0, 2.0, -1.0, 4.0])
    s = _sel(scores, 2, 7)
    assert s.p.tolist() == [2, 4]                     # highest, descending
    assert s.n.tolist() == [5, 1]                     # lowest, ascending
    assert s.e.tolist() == [8, 3, 6]                  # next-lowest, ascending
    assert s.order.tolist()[:7] == [5, 1, 2, 4, 8, 3, 6]
    assert s.order.tolist()[7:] == [0, 7, 9]          # rest in current order
    assert sorted(s.order.tolist()) == list(range(10))


def test_ties_are_deterministic_and_disjoint():
    scores = torch.zeros(20)
    a, b = _sel(scores, 4, 12, seed=3), _sel(scores, 4, 12, seed=3)
    c = _sel(scores, 4, 12, seed=4)
    assert torch.equal(a.order, b.order)
    assert not torch.equal(a.order, c.order)
    assert len(set(a.p.tolist()) | set(a.n.tolist()) | set(a.e.tolist())) == 12


def test_random_and_reversed():
    scores = torch.arange(12.0)
    rev = _sel(scores, 3, 6, "reversed")
    assert rev.p.tolist() == [0, 1, 2] and rev.n.tolist() == [11, 10, 9]
    r1, r2 = _sel(scores, 3, 6, "random", 1), _sel(scores, 3, 6, "random", 2)
    assert not torch.equal(r1.order, r2.order)
    assert r1.p.tolist() != [11, 10, 9] or r2.p.tolist() != [11, 10, 9]


def test_sizes_and_rounding():
    assert unit_plan(32, 0.1875, 0.5625, "heads", "tuned_attn_ratio") == UnitPlan(6, 18)
    assert unit_plan(11008, 0.1875, 0.465, "ch", "tuned_ffn_ratio") == UnitPlan(2064, 5118)
    assert unit_plan(97, 0.001, None, "ch", "tuned_ffn_ratio") == UnitPlan(1, 2)   # k rounds up to 1
    assert low_budget(4, 0.2) and not low_budget(4, 0.25)


@pytest.mark.parametrize("n,k_ratio,tuned", [(32, 0.1875, 0.3), (10, 0.5, 0.9), (1, 0.5, None)])
def test_impossible_ratios_raise_config_error(n, k_ratio, tuned):
    with pytest.raises(ConfigError) as err:
        unit_plan(n, k_ratio, tuned, "units", "tuned_ffn_ratio")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(k_ratio=0.0), dict(k_ratio=0.6), dict(scoring="sum"),
                                    dict(operator="lora"), dict(tuned_ffn_ratio=1.5), dict(init_scale=0)])
def test_bad_config_values(kwargs):
    with pytest.raises(ConfigError):
        ApexConfig(**kwargs)


def test_low_budget_layers_fixed_across_stages():
    chosen = low_budget_layers(32, 32, 0.01, seed=0)
    assert len(chosen) == 10 and chosen == low_budget_layers(32, 32, 0.01, seed=0)
    plans = attention_plans(32, 32, 0.01, None, chosen)
    assert sum(p.k for p in plans) == 10 and all(p.tuned in (0, 2) for p in plans)
    model = llama(64, 4, 4, 4, 97)
    apex = Apex(model, ApexConfig(k_ratio=0.1, tuned_attn_ratio=None, tuned_ffn_ratio=None, seed=2))
    apex.expand()
    first = list(apex.low_budget_layers)
    assert len(first) == 1
    model.train()
    model(input_ids=torch.randint(0, 97, (2, 5)))
    apex.restage()
    assert apex.low_budget_layers == first
    assert [p.k for p in apex.plans["attn"]] == [1 if i in first else 0 for i in range(4)]
