"""Selection of P, N and E per layer (method §2), and the per-layer sizes that stay fixed across stages.

Units: KV groups for attention (MHA: heads), channels for the FFN. Sizes: k = max(1, floor(n·k_ratio))
units in P and in N each, `tuned` = floor(n·tuned_ratio) units in N∪P∪E (2k when the ratio is None).
Ties (frequent with integer rank scores, pitfall 4) are broken by a seeded random key per unit, so a
selection is a deterministic function of (scores, seed). Low-budget head mode (§2): when
floor(G·k_ratio) = 0, floor(G·L·k_ratio) seeded layers get one P and one N group; the others none, as in
the official code (`undrawn_s2=True` keeps this project's earlier choice: floor(G·tuned_attn_ratio) E-only
groups there). `selection=reversed` swaps P and N of FFN channels only, as the official
`reverse_topk_mink` does; `reverse_heads=True` swaps heads too (earlier choice; docs/method.md, differences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from apexlm.errors import ConfigError

_EPS = 1e-9


@dataclass(frozen=True)
class UnitPlan:
    """Sizes for one layer and one unit kind: k units in P and in N each, `tuned` units in N∪P∪E."""

    k: int
    tuned: int

    @property
    def n_extra(self) -> int:
        """|E|: tuned units that get s2 only."""
        return self.tuned - 2 * self.k


@dataclass
class Selection:
    """Positions (in the current layout) of P (descending score), N and E (ascending), and the new order.

    order = N ++ P ++ E ++ rest (rest in current order): position j of the new layout holds old unit
    order[j].
    """

    p: torch.Tensor      # (k,)
    n: torch.Tensor      # (k,)
    e: torch.Tensor      # (tuned − 2k,)
    order: torch.Tensor  # (n_units,)


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def _tuned(n: int, k: int, ratio: float | None, what: str, ratio_name: str) -> int:
    """floor(n·ratio), or 2k when ratio is None; ConfigError when it cannot hold P and N."""
    if 2 * k > n:
        raise ConfigError(f"apex k_ratio gives k={k} {what} per set but only {n} exist "
                          f"(P and N need {2 * k}): lower k_ratio")
    tuned = 2 * k if ratio is None else _floor(n * ratio)
    if tuned < 2 * k:
        need = math.ceil(2e4 * k / n) / 1e4
        raise ConfigError(f"apex {ratio_name}={ratio} tunes {tuned} of {n} {what} but P and N need "
                          f"2k={2 * k}: set {ratio_name} >= {need:g} or lower k_ratio")
    return tuned


def unit_plan(n: int, k_ratio: float, tuned_ratio: float | None, what: str, ratio_name: str) -> UnitPlan:
    """Sizes for n units (§2): k = max(1, floor(n·k_ratio)), tuned from `tuned_ratio`."""
    k = max(1, _floor(n * k_ratio))
    return UnitPlan(k, _tuned(n, k, tuned_ratio, what, ratio_name))


def low_budget(n_kv: int, k_ratio: float) -> bool:
    """Whether attention uses the low-budget mode (§2): k would be 0 before the max(1, ·)."""
    return _floor(n_kv * k_ratio) < 1


def low_budget_layers(n_layers: int, n_kv: int, k_ratio: float, seed: int) -> list[int]:
    """floor(G·L·k_ratio) seeded layers (sorted) that get one P and one N group in low-budget mode."""
    count = min(n_layers, _floor(n_kv * n_layers * k_ratio))
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_layers, generator=gen)[:count].tolist())


def attention_plans(n_layers: int, n_kv: int, k_ratio: float, tuned_ratio: float | None,
                    chosen: list[int] | None, undrawn_s2: bool = False) -> list[UnitPlan]:
    """Per-layer attention sizes. `chosen` = low-budget layers (None unless `low_budget`).

    Low-budget layers not chosen tune nothing (official), or floor(G·tuned_ratio) E-only groups when
    `undrawn_s2` (ApexConfig.low_budget_undrawn_s2).
    """
    if chosen is None:
        plan = unit_plan(n_kv, k_ratio, tuned_ratio, "KV groups", "tuned_attn_ratio")
        return [plan] * n_layers
    extra = 0 if tuned_ratio is None else _floor(n_kv * tuned_ratio)
    if n_kv < 2:
        raise ConfigError(f"apex low-budget attention needs 2 KV groups per chosen layer, the model has "
                          f"{n_kv}: use a model with more KV heads")
    on = UnitPlan(1, 2 if tuned_ratio is None else max(2, extra))
    off = UnitPlan(0, extra if undrawn_s2 else 0)
    return [on if i in set(chosen) else off for i in range(n_layers)]


def _seed(seed: int, stage: int, layer: int, kind: str) -> int:
    return (seed * 1_000_003 + stage * 7_919 + layer * 4 + (1 if kind == "ffn" else 0)) % (2**62)


def select_units(scores: torch.Tensor, plan: UnitPlan, mode: str, seed: int, stage: int, layer: int,
                 kind: str, reverse_heads: bool = False) -> Selection:
    """Pick P, N, E from a layer's scores (§2) and the permutation that puts them in front.

    mode: "activation" uses the scores; "random" replaces them by a seeded random permutation;
    "reversed" swaps P and N (§1 ablations) of FFN channels (kind "ffn"), and of heads (kind "attn") only
    when `reverse_heads`; heads otherwise select as "activation" (official `reverse_topk_mink`).
    Sorting is by (score, seeded key), so ties are deterministic.
    """
    n_units = scores.numel()
    gen = torch.Generator().manual_seed(_seed(seed, stage, layer, kind))
    values = scores.detach().to("cpu", torch.float64).reshape(-1)
    if mode == "random":
        values = torch.randperm(n_units, generator=gen).double()
    key = torch.rand(n_units, generator=gen, dtype=torch.float64)
    by_key = torch.argsort(key, stable=True)
    asc = by_key[torch.argsort(values[by_key], stable=True)]      # ascending by (score, key)
    k = plan.k
    top = asc[n_units - k:].flip(0) if k else asc[:0]              # k highest, descending
    rest = asc[: n_units - k]
    low = rest[:k]                                                  # k lowest of the rest, ascending
    extra = rest[k:plan.tuned - k]                                  # next-lowest, ascending
    swap = mode == "reversed" and (kind == "ffn" or reverse_heads)
    p, n = (low, top) if swap else (top, low)
    front = torch.cat([n, p, extra])
    taken = torch.zeros(n_units, dtype=torch.bool)
    taken[front] = True
    order = torch.cat([front, torch.arange(n_units)[~taken]])
    return Selection(p=p, n=n, e=extra, order=order)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two id sets (1.0 when both are empty)."""
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)
