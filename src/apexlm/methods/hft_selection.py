"""Which weight matrices Half Fine-Tuning trains in a stage: discovery of the candidates and the seeded draw.

HFT (Hui et al. 2024) trains a random half of each decoder layer's matrices and freezes the rest, redrawing
the half every stage. The draw is made per matrix group (default: attention q,k,v,o and MLP gate,up,down), so
attention and MLP each keep half of their matrices:

- a group of n matrices in each of L layers gets `floor(ratio * n * L + 0.5)` picks over the whole model;
- every layer gets `floor(ratio * n)` of them, and the remainder goes, one each, to randomly chosen layers.

With ratio 0.5 this means 2 of 4 attention matrices in every layer, and 1 or 2 of the 3 MLP matrices: half of
the layers get 2, the other half 1 (odd L: one more layer gets 2 than 1, as .5 totals round up). Each layer
therefore trains 3 or 4 of its 7 matrices, and the model exactly half of its MLP matrices when L is even.

The draw of stage s is a pure function of (seed, s), so a resumed run redraws the same selections and the
whole random state of the method is those two integers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("gate_proj", "up_proj", "down_proj"),
)


@dataclass(frozen=True)
class MatrixUnit:
    """One weight matrix of one decoder layer (and its bias, if any): the unit HFT freezes or trains."""

    name: str  # module path, e.g. "model.layers.3.self_attn.q_proj"
    layer: int
    group: int  # index into the matrix groups
    kind: str  # leaf name, e.g. "q_proj"


def find_units(model: nn.Module, groups: Sequence[Sequence[str]] = DEFAULT_GROUPS) -> list[MatrixUnit]:
    """Every matrix of every decoder layer (`...layers.<i>...<kind>`) whose leaf name is in a group."""
    kind_to_group = {kind: gi for gi, kinds in enumerate(groups) for kind in kinds}
    units = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if parts[-1] not in kind_to_group or "layers" not in parts[:-1]:
            continue
        idx = parts.index("layers") + 1
        if idx >= len(parts) - 1 or not parts[idx].isdigit():
            continue
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        units.append(MatrixUnit(name, int(parts[idx]), kind_to_group[parts[-1]], parts[-1]))
    return units


def picks_per_layer(n: int, layers: list[int], ratio: float, rng: random.Random) -> dict[int, int]:
    """How many of a group's n matrices each layer trains: floor(ratio*n), the remainder to random layers."""
    total = math.floor(ratio * n * len(layers) + 0.5)
    base = math.floor(ratio * n)
    counts = {layer: base for layer in layers}
    extra = min(max(total - base * len(layers), 0), len(layers))
    for layer in rng.sample(sorted(layers), extra):
        counts[layer] = min(n, counts[layer] + 1)
    return counts


def draw_selection(units: Sequence[MatrixUnit], ratio: float, seed: int, stage: int) -> list[str]:
    """Names of the units that train in `stage` (sorted); reproducible from (seed, stage) alone."""
    rng = random.Random(f"hft:{seed}:{stage}")
    by_group: dict[int, dict[int, list[MatrixUnit]]] = {}
    for u in units:
        by_group.setdefault(u.group, {}).setdefault(u.layer, []).append(u)
    chosen: list[str] = []
    for group in sorted(by_group):
        layers = by_group[group]
        sizes = {len(v) for v in layers.values()}
        n = max(sizes)
        counts = picks_per_layer(n, sorted(layers), ratio, rng)
        for layer in sorted(layers):
            members = sorted(layers[layer], key=lambda u: u.name)
            k = min(counts[layer], len(members))
            chosen.extend(u.name for u in rng.sample(members, k))
    return sorted(chosen)
