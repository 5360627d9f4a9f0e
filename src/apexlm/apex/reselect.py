"""Bookkeeping of a selection step (method §2, §6): score checks, P/N overlap between stages, sizes.

The step itself — choose P/N/E for every layer and move them to the front, one layer at a time on plain or
sharded weights — is `apexlm.apex.sharded.transition`. Scores index the CURRENT layout; `Apex.unit_ids` maps
each current position to the original unit id and is updated by every permutation, so P/N overlaps between
stages compare original units.
"""

from __future__ import annotations

import torch

from apexlm.apex.arch import Arch
from apexlm.apex.selection import UnitPlan, jaccard

Sets = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]   # kind → per layer (P ids, N ids), original ids


def check_scores(arch: Arch, scores: dict[str, list[torch.Tensor]]) -> None:
    """Raise ValueError unless `scores` has one (G,) attention and one (d_ff,) FFN vector per layer."""
    for kind, size in (("attn", arch.n_kv), ("ffn", arch.d_ff)):
        vals = scores.get(kind)
        if vals is None or len(vals) != arch.n_layers or any(v.numel() != size for v in vals):
            raise ValueError(f"scores[{kind!r}] must hold {arch.n_layers} vectors of {size} values")


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
