"""The two former deviations from the official code (docs/method.md, differences), now official by default.

1. Low-budget head mode (§2): layers that are not drawn train no attention parameter; the option
   `low_budget_undrawn_s2=True` keeps the earlier E-only s2 heads there.
2. `selection=reversed` swaps P and N of FFN channels only; heads select as with activation scores. The
   option `reverse_heads=True` keeps the earlier behaviour (heads swapped too).
"""

import pytest
import torch

from apexlm.apex import Apex, ApexConfig
from apexlm.apex.selection import UnitPlan, select_units
from apexlm.errors import ConfigError
from tests.support.models import llama

HIDDEN, LAYERS, HEADS, FFN = 64, 4, 4, 97
D_H = HIDDEN // HEADS


def _attn_trainable(model, layer: int) -> int:
    """Trainable parameters inside one layer's self_attn (wrappers and their s2/mixers included)."""
    attn = model.model.layers[layer].self_attn
    return sum(p.numel() for p in {id(p): p for p in attn.parameters() if p.requires_grad}.values())


def _low_budget(**kw) -> tuple[Apex, torch.nn.Module]:
    # floor(4 heads x 0.1) = 0: low-budget mode, floor(4 x 4 x 0.1) = 1 drawn layer; tuned_attn_ratio 0.5
    # gives floor(4 x 0.5) = 2 E heads per undrawn layer when the option keeps them.
    model = llama(HIDDEN, LAYERS, HEADS, HEADS, FFN)
    apex = Apex(model, ApexConfig(k_ratio=0.1, tuned_attn_ratio=0.5, tuned_ffn_ratio=None, seed=3, **kw))
    apex.expand()
    return apex, model


def test_low_budget_undrawn_layers_train_no_attention_by_default():
    apex, model = _low_budget()
    drawn = apex.low_budget_layers
    assert len(drawn) == 1
    per_layer = [_attn_trainable(model, i) for i in range(LAYERS)]
    assert [per_layer[i] for i in range(LAYERS) if i not in drawn] == [0] * (LAYERS - 1)
    assert per_layer[drawn[0]] > 0
    assert [p.tuned for i, p in enumerate(apex.plans["attn"]) if i not in drawn] == [0] * (LAYERS - 1)


def test_low_budget_option_keeps_e_only_heads_on_undrawn_layers():
    apex, model = _low_budget(low_budget_undrawn_s2=True)
    drawn = apex.low_budget_layers
    undrawn = [i for i in range(LAYERS) if i not in drawn]
    # 2 E heads, s2 only: v rows (2·d_h × d), o columns (d × 2·d_h), q and k rows (finetune_qk, MHA)
    expected = 4 * 2 * D_H * HIDDEN
    assert [_attn_trainable(model, i) for i in undrawn] == [expected] * len(undrawn)
    base_apex, base_model = _low_budget()
    assert apex.summary()["trainable"] - base_apex.summary()["trainable"] == expected * len(undrawn)


def test_low_budget_option_survives_restage():
    apex, model = _low_budget()
    model.train()
    model(input_ids=torch.randint(0, 97, (2, 5)))
    apex.restage()
    assert [_attn_trainable(model, i) for i in range(LAYERS) if i not in apex.low_budget_layers] == [0] * 3


def _scores(seed: int = 0) -> dict[str, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {"attn": [torch.rand(HEADS, generator=gen) for _ in range(LAYERS)],
            "ffn": [torch.rand(FFN, generator=gen) for _ in range(LAYERS)]}


def _sets(selection: str, **kw) -> dict:
    model = llama(HIDDEN, LAYERS, HEADS, HEADS, FFN)
    apex = Apex(model, ApexConfig(k_ratio=0.25, tuned_attn_ratio=None, tuned_ffn_ratio=None, selection=selection,
                                  seed=1, **kw))
    apex.expand(_scores())
    return {kind: [(p.tolist(), n.tolist()) for p, n in apex.sets[kind]] for kind in ("attn", "ffn")}


def test_reversed_swaps_channels_only_by_default():
    act, rev = _sets("activation"), _sets("reversed")
    assert rev["attn"] == act["attn"]                                    # heads: the activation choice
    assert [set(p) for p, _ in rev["ffn"]] == [set(n) for _, n in act["ffn"]]   # channels: P and N swapped
    assert [set(n) for _, n in rev["ffn"]] == [set(p) for p, _ in act["ffn"]]


def test_reverse_heads_option_swaps_heads_too():
    act, rev = _sets("activation"), _sets("reversed", reverse_heads=True)
    assert [set(p) for p, _ in rev["attn"]] == [set(n) for _, n in act["attn"]]
    assert [set(n) for _, n in rev["attn"]] == [set(p) for p, _ in act["attn"]]
    assert [set(p) for p, _ in rev["ffn"]] == [set(n) for _, n in act["ffn"]]


def test_select_units_reversed_per_kind():
    scores = torch.arange(8.0)
    heads = select_units(scores, UnitPlan(2, 4), "reversed", 0, 0, 0, "attn")
    assert heads.p.tolist() == [7, 6] and heads.n.tolist() == [0, 1]
    swapped = select_units(scores, UnitPlan(2, 4), "reversed", 0, 0, 0, "attn", reverse_heads=True)
    assert swapped.p.tolist() == [0, 1] and swapped.n.tolist() == [7, 6]


@pytest.mark.parametrize("kwargs", [dict(reverse_heads=True), dict(reverse_heads=1),
                                    dict(low_budget_undrawn_s2="yes")])
def test_bad_deviation_options(kwargs):
    with pytest.raises(ConfigError) as err:
        ApexConfig(**kwargs)
    assert "\n" not in str(err.value)
