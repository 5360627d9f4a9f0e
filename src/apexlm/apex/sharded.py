"""APEX stage transitions one decoder layer at a time, on plain or FSDP2-sharded weights (method §6, §4).

Under FSDP2 (`fully_shard`) every parameter is a DTensor holding one shard per rank. `gathered(module)` makes
the existing fold / permute code run on full tensors without ever gathering the whole model:

    with gathered(layer) as g:        # each DTensor param of `layer` -> a plain Parameter with the full tensor
        fold_layer(ops, gen)          # the usual code, on full tensors (a collective per parameter on entry)
        permute_params(specs)
    # on exit: each rank copies ITS shard of every full tensor back into the local shard of the ORIGINAL
    # Parameter, in place (same Parameter objects: FSDP and the optimizer keep their references)

Plain parameters pass through untouched, so one code path serves one process, DDP and FSDP. Every rank must
run the same transitions in the same order (each gather is a collective).

Why this works without creating Parameters: operator and s2 sizes depend only on the ratios, never on the
scores (method §2), so `Apex.install()` puts the wrappers in at an identity layout before sharding and every
later transition only rewrites values.

Optimizer state is reset IN PLACE (moments zeroed, step = 0), never popped: a fresh Adam state and a zeroed
one compute the same update, and a sharded checkpoint of an optimizer with no state would be re-initialised
by a dummy step on load (which would make the resumed run's bias correction differ).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from apexlm.apex.fuse import fold_layer
from apexlm.apex.permute import PermSpec, apply_perm, attention_specs, ffn_specs, permute_params
from apexlm.apex.reselect import Sets, check_scores, overlap_metrics, size_summary
from apexlm.apex.selection import select_units

Apex = Any  # an `apexlm.apex.core.Apex` (not imported: core imports this module)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return None
    return DTensor


def is_sharded(t: torch.Tensor) -> bool:
    """Whether `t` is a DTensor (an FSDP2 parameter, its gradient or its optimizer state)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def model_is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of `model` is a DTensor."""
    return any(is_sharded(p) for p in model.parameters())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective for a DTensor; `t` itself otherwise)."""
    return t.full_tensor() if is_sharded(t) else t


@torch.no_grad()
def write_shard(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's part of `full` into DTensor `dst`'s local shard in place (plain `dst`: the whole)."""
    if not is_sharded(dst):
        if dst.data_ptr() != full.data_ptr():
            dst.copy_(full)
        return
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = dst.to_local()
    shape, offset = compute_local_shape_and_global_offset(full.shape, dst.device_mesh, dst.placements)
    if local.numel() == 0:
        return
    part = full[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]
    local.copy_(part.to(device=local.device, dtype=local.dtype))


class Gathered:
    """The full-tensor stand-ins of one module tree's DTensor parameters (see `gathered`)."""

    def __init__(self, module: nn.Module) -> None:
        self.slots: list[tuple[nn.Module, str, nn.Parameter]] = []   # (owner, name, original Parameter)
        self.full: dict[int, nn.Parameter] = {}                       # id(original) -> full stand-in
        self.original: dict[int, nn.Parameter] = {}                   # id(stand-in) -> original
        for owner in module.modules():
            for name, p in list(owner._parameters.items()):
                if p is None or not is_sharded(p):
                    continue
                if id(p) not in self.full:
                    stand_in = nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad)
                    self.full[id(p)] = stand_in
                    self.original[id(stand_in)] = p
                self.slots.append((owner, name, p))
                owner._parameters[name] = self.full[id(p)]

    def source(self, p: nn.Parameter) -> nn.Parameter:
        """The original (sharded) Parameter behind a stand-in, or `p` itself."""
        return self.original.get(id(p), p)

    def restore(self) -> None:
        """Write every rank's shard back into the originals and put them back into their modules."""
        done: set[int] = set()
        for owner, name, p in self.slots:
            if id(p) not in done:
                done.add(id(p))
                write_shard(p, self.full[id(p)].data)
            owner._parameters[name] = p


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[Gathered]:
    """Within the block, `module`'s DTensor parameters are plain full tensors; shards are written back on exit."""
    with torch.no_grad():
        g = Gathered(module)
        try:
            yield g
        finally:
            g.restore()


# ---- optimizer state ---------------------------------------------------------------------------------
@torch.no_grad()
def reset_state_(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> int:
    """Fresh Adam state for `params`, in place: tensors zeroed (step = 0). Returns how many had state."""
    n = 0
    for p in params:
        state = optimizer.state.get(p)
        if not state:
            continue
        n += 1
        for value in state.values():
            if torch.is_tensor(value):
                value.zero_()
    return n


@torch.no_grad()
def permute_state_(optimizer: torch.optim.Optimizer, specs: list[PermSpec], g: Gathered) -> None:
    """Permute the moments (state tensors of the param's shape) of each spec's ORIGINAL param like the param."""
    for spec in specs:
        param = g.source(spec.param)
        state = optimizer.state.get(param)
        if not state:
            continue
        for value in state.values():
            if torch.is_tensor(value) and tuple(value.shape) == tuple(param.shape):
                full = full_tensor(value).clone() if is_sharded(value) else value
                apply_perm(full, spec)
                write_shard(value, full)


def all_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


# ---- selection ---------------------------------------------------------------------------------------
def select_orders(apex: Apex, scores: dict[str, list[torch.Tensor]], stage: int
                  ) -> tuple[dict[str, list[torch.Tensor | None]], Sets]:
    """Every layer's new unit order from `scores` (CPU only, no weights touched); updates `apex.unit_ids`.

    The selection step: per layer, P/N/E chosen from the scores and the bookkeeping updated; the permutation is
    left to the caller. Layers whose plan tunes nothing keep their order (None).
    """
    arch, cfg, plans = apex.arch, apex.cfg, apex._make_plans()
    check_scores(arch, scores)
    orders: dict[str, list[torch.Tensor | None]] = {"attn": [], "ffn": []}
    sets: Sets = {"attn": [], "ffn": []}
    for kind in ("attn", "ffn"):
        for i in range(arch.n_layers):
            plan, ids = plans[kind][i], apex.unit_ids[kind][i]
            if plan.tuned == 0:
                sets[kind].append((ids[:0], ids[:0]))
                orders[kind].append(None)
                continue
            sel = select_units(scores[kind][i], plan, cfg.selection, cfg.seed, stage, i, kind, cfg.reverse_heads)
            sets[kind].append((ids[sel.p].clone(), ids[sel.n].clone()))
            orders[kind].append(sel.order)
            apex.unit_ids[kind][i] = ids[sel.order]
    return orders, sets


def _layer_specs(apex: Apex, i: int, orders: dict[str, list[torch.Tensor | None]]) -> list[PermSpec]:
    a, f = orders["attn"][i], orders["ffn"][i]
    return ([] if a is None else attention_specs(apex.arch, i, a)) + ([] if f is None else ffn_specs(apex.arch, i, f))


# ---- transitions -------------------------------------------------------------------------------------
def transition(apex: Apex, fold: bool, optimizer: torch.optim.Optimizer | None = None,
               reset_base_state: bool = True, scores: dict[str, list[torch.Tensor]] | None = None
               ) -> dict[str, Any]:
    """(fold →) select from the recorded scores → permute → optimizer state, one layer at a time.

    `fold=False` is the first selection (`Apex.expand` on installed identity wrappers); `fold=True` a stage
    boundary (`Apex.restage`). `scores` default to the recorded ones, all-reduced once (a collective).
    Returns stage metrics.
    """
    t0 = time.perf_counter()
    scores = apex.scores if scores is None else scores
    stage = apex.stage + 1 if fold else apex.stage
    prev = apex.sets
    orders, apex.sets = select_orders(apex, scores, stage)
    for i in range(apex.arch.n_layers):
        with gathered(apex.arch.layers[i]) as g:
            if fold:
                fold_layer(apex.ops[i], apex._gen)      # operators are identity from here (pitfall 1)
            specs = _layer_specs(apex, i, orders)
            permute_params(specs)
            if optimizer is not None and not reset_base_state:
                permute_state_(optimizer, specs, g)
    dropped = 0
    if optimizer is not None and fold:
        dropped = reset_state_(optimizer, all_params(optimizer) if reset_base_state else apex.operator_parameters())
    apex.recorder.zero()
    out: dict[str, Any] = {"stage": stage, "transition_time_s": time.perf_counter() - t0}
    if fold:
        out.update({"optimizer_states_reset": dropped, **overlap_metrics(prev, apex.sets)})
    return {**out, **size_summary(apex._make_plans())}


def fold_in_place(apex: Apex) -> None:
    """Fold every layer's operators into its base weights, one layer at a time; wrappers stay (at identity).

    On a sharded model this is the export-time fuse: the base weights then hold the fused model's weights
    and the state dict without the operator entries is the plain HF model (method §4).
    """
    for i in range(apex.arch.n_layers):
        with gathered(apex.arch.layers[i]):
            fold_layer(apex.ops[i], apex._gen)
