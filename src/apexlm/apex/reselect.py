"""One selection step: choose P/N/E for every layer and move them to the front (method §2, §6).

Used by `Apex.expand` (from the assessment scores) and `Apex.restage` (from the stage's training scores,
after the fold). Scores index the CURRENT layout; `unit_ids` maps each current position to the original
unit id and is updated by every permutation, so P/N overlaps between stages compare original units.
"""

from __future__ import annotations

import torch

from apexlm.apex.arch import Arch
from apexlm.apex.config import ApexConfig
from apexlm.apex.permute import PermSpec, attention_specs, ffn_specs, permute_params
from apexlm.apex.selection import Selection, UnitPlan, jaccard, select_units

Sets = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]   # kind → per layer (P ids, N ids), original ids


def check_scores(arch: Arch, scores: dict[str, list[torch.Tensor]]) -> None:
    """Raise ValueError unless `scores` has one (G,) attention and one (d_ff,) FFN vector per layer."""
    for kind, size in (("attn", arch.n_kv), ("ffn", arch.d_ff)):
        vals = scores.get(kind)
        if vals is None or len(vals) != arch.n_layers or any(v.numel() != size for v in vals):
            raise ValueError(f"scores[{kind!r}] must hold {arch.n_layers} vectors of {size} values")


def select_and_permute(arch: Arch, cfg: ApexConfig, scores: dict[str, list[torch.Tensor]],
                       plans: dict[str, list[UnitPlan]], unit_ids: dict[str, list[torch.Tensor]],
                       stage: int) -> tuple[list[PermSpec], Sets]:
    """Select every layer's P/N/E, permute the base parameters in place, update `unit_ids`.

    Returns the permutation specs (to permute optimizer state alike) and the selected sets in original
    unit ids. Layers whose plan tunes nothing are left in place.
    """
    check_scores(arch, scores)
    specs: list[PermSpec] = []
    sets: Sets = {"attn": [], "ffn": []}
    for kind, make_specs in (("attn", attention_specs), ("ffn", ffn_specs)):
        for i in range(arch.n_layers):
            plan = plans[kind][i]
            ids = unit_ids[kind][i]
            if plan.tuned == 0:
                sets[kind].append((ids[:0], ids[:0]))
                continue
            sel: Selection = select_units(scores[kind][i], plan, cfg.selection, cfg.seed, stage, i, kind,
                                          cfg.reverse_heads)
            sets[kind].append((ids[sel.p].clone(), ids[sel.n].clone()))
            specs.extend(make_specs(arch, i, sel.order))
            unit_ids[kind][i] = ids[sel.order]
    permute_params(specs)
    return specs, sets


def overlap_metrics(prev: Sets | None, cur: Sets) -> dict[str, float]:
    """Mean Jaccard overlap of P and of N with the previous stage (layers with P/N only)."""
    out: dict[str, float] = {}
    if prev is None:
        return out
    for kind in ("attn", "ffn"):
        for pos, name in ((0, "p"), (1, "n")):
            vals = [jaccard(a[pos], b[pos]) for a, b in zip(prev[kind], cur[kind], strict=True) if a[pos].numel() or
                    b[pos].numel()]
            if vals:
                out[f"jaccard_{name}_{kind}"] = sum(vals) / len(vals)
    return out


def size_summary(plans: dict[str, list[UnitPlan]]) -> dict[str, list[int]]:
    """Per-layer sizes: k (units in P and in N) and tuned (|N∪P∪E|) for attention groups and channels."""
    return {f"{kind}_{what}": [getattr(p, what) for p in plans[kind]]
            for kind in ("attn", "ffn") for what in ("k", "tuned")}
