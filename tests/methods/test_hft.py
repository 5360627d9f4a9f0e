"""Half Fine-Tuning: exactly the drawn half moves, the rest is bitwise frozen, redraws are seeded."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from apexlm.methods import build_method
from apexlm.methods.hft import HftMethod
from apexlm.methods.hft_selection import DEFAULT_GROUPS, draw_selection, find_units, picks_per_layer
from tests.support.loop import train_steps
from tests.support.models import batches, micro_model, snapshot

ATTN, MLP = set(DEFAULT_GROUPS[0]), set(DEFAULT_GROUPS[1])


def _cfg(**kw: object) -> dict:
    return {"name": "hft", "stages": 4, "stage_lr": "continue", **kw}


def _moved_units(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    """Module paths of the layer matrices whose weight changed since `before`."""
    return {n.rsplit(".", 1)[0] for n, p in model.named_parameters()
            if not torch.equal(p.detach(), before[n]) and ".layers." in n and n.endswith("proj.weight")}


def _check_half(selection: list[str], layers: int = 2) -> None:
    per_layer = Counter((int(s.split(".")[2]), s.rsplit(".", 1)[-1] in ATTN) for s in selection)
    for layer in range(layers):
        assert per_layer[(layer, True)] == 2  # 2 of q,k,v,o
        assert per_layer[(layer, False)] in (1, 2)  # 1 or 2 of gate,up,down
        assert per_layer[(layer, True)] + per_layer[(layer, False)] in (3, 4)  # floor / ceil of 7/2
    assert sum(v for (_, attn), v in per_layer.items() if not attn) == 3  # exactly half of 2*3 MLP matrices


@pytest.mark.parametrize("freeze", ["requires_grad", "mask"])
def test_exactly_the_drawn_half_moves_each_stage(freeze: str) -> None:
    model = micro_model()
    method = build_method(_cfg(freeze=freeze), seed=7)
    assert isinstance(method, HftMethod)
    model = method.prepare(model)
    # weight decay on: decoupled decay must not touch the frozen half either
    opt = torch.optim.AdamW(method.param_groups(model, 1e-2, 0.1))
    data = batches(6)
    seen = []
    for stage in range(3):
        _check_half(method.selection)
        before = snapshot(model)
        train_steps(model, method, opt, data[2 * stage: 2 * stage + 2])
        assert _moved_units(model, before) == set(method.selection)
        after = snapshot(model)
        chosen = set(method.selection)
        for name, tensor in before.items():
            if name.rsplit(".", 1)[0] not in chosen:
                assert torch.equal(after[name], tensor), f"{name} is frozen this stage but moved"
        seen.append(list(method.selection))
        method.end_stage(model, opt)
    assert len({tuple(s) for s in seen}) > 1, "the selection never changed across stages"


def test_selection_is_reproducible_from_the_seed_and_resumes() -> None:
    def sequence(seed: int) -> list[list[str]]:
        m = build_method(_cfg(), seed=seed)
        model = m.prepare(micro_model())
        out = [m.selection]
        for _ in range(3):
            m.end_stage(model, None)
            out.append(m.selection)
        return out

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)
    # resume: a fresh method on a fresh model takes over the stage and the selection
    m = build_method(_cfg(), seed=3)
    model = m.prepare(micro_model())
    m.end_stage(model, None)
    m.end_stage(model, None)
    state = m.state_dict()
    m2 = build_method(_cfg(), seed=99)
    model2 = m2.prepare(micro_model())
    m2.load_state_dict(state)
    assert m2.stage == 2 and m2.selection == m.selection and m2.seed == 3
    assert [p.requires_grad for p in model2.parameters()] == [p.requires_grad for p in model.parameters()]
    m.end_stage(model, None)
    m2.end_stage(model2, None)
    assert m2.selection == m.selection  # the next redraw agrees too


def test_norms_and_embeddings_follow_their_knobs_and_summary() -> None:
    model = micro_model()
    method = build_method(_cfg(), seed=0)
    method.prepare(model)
    frozen = [n for n, p in model.named_parameters() if "norm" in n or "embed" in n or "lm_head" in n]
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    s = method.summary(model)
    units = find_units(model)
    chosen = sum(model.get_submodule(u.name).weight.numel() for u in units if u.name in set(method.selection))
    assert s["trainable_params"] == chosen
    assert s["hft_block_fraction"] == pytest.approx(chosen / sum(model.get_submodule(u.name).weight.numel()
                                                                  for u in units))
    assert 0.3 < s["hft_block_fraction"] < 0.7
    model2 = micro_model()
    m2 = build_method(_cfg(train_norms=True, train_embeddings=True), seed=0)
    m2.prepare(model2)
    assert all(p.requires_grad for n, p in model2.named_parameters() if n in frozen)
    grouped = {id(p) for g in m2.param_groups(model2, 1e-3, 0.0) for p in g["params"]}
    assert len(grouped) == len(find_units(model2)) + len(frozen)  # every candidate, trained now or not


def test_rounding_of_odd_totals() -> None:
    import random

    counts = picks_per_layer(3, list(range(5)), 0.5, random.Random(0))
    assert sorted(counts.values()) == [1, 1, 2, 2, 2]  # 7.5 rounds up to 8 picks
    units = find_units(micro_model())
    assert len(draw_selection(units, 1.0, 0, 0)) == len(units) == 14
