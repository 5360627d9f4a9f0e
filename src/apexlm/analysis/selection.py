"""APEX selection analytics: P/N overlap between consecutive stages and the distribution of unit scores.

Selections come from `Apex.sets` ({"attn"|"ffn": per layer (P ids, N ids)} in ORIGINAL unit ids, so the
overlap is about the same units even though each stage permutes the layout). Scores come from `Apex.scores`
({"attn": [(G,)], "ffn": [(d_ff,)]} per layer, current layout); a histogram is layout-independent.
"""

from __future__ import annotations

from typing import Any

import torch

Sets = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """|a ∩ b| / |a ∪ b| of two id sets; None when both are empty (nothing was selected)."""
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return len(sa & sb) / len(union) if union else None


def copy_sets(sets: Sets | None) -> Sets | None:
    """A detached CPU copy (the Apex object replaces its sets at every stage)."""
    if sets is None:
        return None
    return {kind: [(p.detach().cpu().clone(), n.detach().cpu().clone()) for p, n in per_layer]
            for kind, per_layer in sets.items()}


def stage_overlap(prev: Sets, cur: Sets) -> dict[str, Any]:
    """Per kind and set: per-layer Jaccard overlap (None for layers without P/N) and its mean over layers."""
    out: dict[str, Any] = {}
    for kind in ("attn", "ffn"):
        for pos, name in ((0, "p"), (1, "n")):
            vals = [jaccard(a[pos], b[pos]) for a, b in zip(prev.get(kind, []), cur.get(kind, []), strict=False)]
            known = [v for v in vals if v is not None]
            out[f"{name}_{kind}"] = {"per_layer": vals, "mean": sum(known) / len(known) if known else None}
    return out


def score_histograms(scores: dict[str, list[torch.Tensor]], bins: int = 30) -> dict[str, Any]:
    """Per kind: histogram (counts, edges) of all layers' scores pooled, plus per-layer min/mean/max."""
    out: dict[str, Any] = {}
    for kind, per_layer in scores.items():
        if not per_layer:
            continue
        flat = torch.cat([s.detach().float().cpu().reshape(-1) for s in per_layer])      # (L·U,)
        lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            hi = lo + 1.0
        counts = torch.histc(flat, bins=bins, min=lo, max=hi)
        edges = torch.linspace(lo, hi, bins + 1)
        out[kind] = {"counts": [int(c) for c in counts.tolist()], "edges": edges.tolist(),
                     "layer_min": [float(s.min()) for s in per_layer],
                     "layer_mean": [float(s.float().mean()) for s in per_layer],
                     "layer_max": [float(s.max()) for s in per_layer]}
    return out
