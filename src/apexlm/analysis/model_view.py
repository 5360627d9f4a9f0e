"""A read-only view of a LLaMA-family decoder for analysis: layers, head geometry, current weights.

Works on a plain Hugging Face model, on a model that APEX has wrapped (a wrapper's `effective()` weight is
what it applies), and on a peft model (adapters merged into a copy of each layer, so DoRA and PiSSA are
right too). Nothing here changes the model. Where the layers and projections are and how the head geometry
is read is apex.arch's knowledge; this module adds only the applied weights and APEX's unit reordering.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from apexlm.apex.arch import ffn_width, find_layers, proj_of, read_heads

# The matrices whose effective rank is reported (method §8 suggestion); where each lives: `arch.PROJ`.
MATRICES: tuple[str, ...] = ("v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class Geometry:
    """Head layout: H query heads in G KV groups of rep = H/G heads of size d_h; FFN width d_ff.

    A model-free value (no layers held), so a snapshot's layout can be kept and serialised; read by
    `geometry` through apex.arch's readers.
    """

    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    d_ff: int

    @property
    def rep(self) -> int:
        """Query heads per KV group (1 for MHA)."""
        return self.n_heads // self.n_kv


def geometry(model: nn.Module) -> Geometry:
    """The head geometry of `model` (any wrapper that forwards `.config` works), without changing it."""
    layers = find_layers(model)
    return Geometry(len(layers), *read_heads(model.config), ffn_width(layers[0]))


@torch.no_grad()
def current_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight `module` applies now, float32, detached, on the module's device."""
    if hasattr(module, "effective"):                         # an APEX wrapper: W' from base, s2, mixers
        return module.effective(torch.float32)[0].detach()
    if hasattr(module, "get_base_layer") and hasattr(module, "merge"):   # a peft tuner layer
        merged = copy.deepcopy(module)
        merged.merge()
        return merged.get_base_layer().weight.detach().float()
    return module.weight.detach().float()


def layer_weights(model: nn.Module, device: torch.device | str | None = "cpu"
                  ) -> dict[str, list[torch.Tensor]]:
    """{matrix: [(out, in) float32 per layer]} of W_v, W_o, gate, up, down as the model applies them now.

    Always copies: the result never aliases a live parameter (a base snapshot must not train along).
    """
    layers = find_layers(model)
    out: dict[str, list[torch.Tensor]] = {}
    for name in MATRICES:
        out[name] = [current_weight(proj_of(layer, name)).to(device, copy=True) for layer in layers]
    return out


def _reorder(w: torch.Tensor, dim: int, block: int, order: torch.Tensor) -> torch.Tensor:
    """Blocks of `block` rows (dim 0) or columns (dim 1): new block j = old block order[j]."""
    n = order.numel()
    idx = order.to(w.device).long()
    if dim == 0:
        return w.reshape(n, block, w.shape[1]).index_select(0, idx).reshape(w.shape)      # (out, in)
    return w.reshape(w.shape[0], n, block).index_select(1, idx).reshape(w.shape)          # (out, in)


def _inverse(order: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(order)
    inv[order.long()] = torch.arange(order.numel(), dtype=order.dtype)
    return inv


# Which unit kind and axis each matrix is permuted along, and the block size in units of (geometry).
def _layout(name: str, geo: Geometry) -> tuple[str, int, int]:
    return {"v": ("attn", 0, geo.head_dim), "o": ("attn", 1, geo.rep * geo.head_dim),
            "gate": ("ffn", 0, 1), "up": ("ffn", 0, 1), "down": ("ffn", 1, 1)}[name]


def to_layout(weights: dict[str, list[torch.Tensor]], unit_ids: dict[str, list[torch.Tensor]],
              geo: Geometry) -> dict[str, list[torch.Tensor]]:
    """Weights in ORIGINAL unit order → the layout where position j holds unit unit_ids[kind][l][j].

    `unit_ids` is APEX's per-layer map from current position to original unit id (`Apex.unit_ids`).
    """
    out: dict[str, list[torch.Tensor]] = {}
    for name, per_layer in weights.items():
        kind, dim, block = _layout(name, geo)
        out[name] = [_reorder(w, dim, block, unit_ids[kind][i]) for i, w in enumerate(per_layer)]
    return out


def to_original(weights: dict[str, list[torch.Tensor]], unit_ids: dict[str, list[torch.Tensor]],
                geo: Geometry) -> dict[str, list[torch.Tensor]]:
    """Inverse of `to_layout`: weights in the permuted layout → original unit order."""
    inv = {kind: [_inverse(ids) for ids in per_layer] for kind, per_layer in unit_ids.items()}
    return to_layout(weights, inv, geo)
