"""A read-only view of a LLaMA-family decoder for analysis: layers, head geometry, current weights.

Works on a plain Hugging Face model, on a model that APEX has wrapped (a wrapper's `effective()` weight is
what it applies), and on a peft model (adapters merged into a copy of each layer, so DoRA and PiSSA are
right too). Nothing here changes the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

# The matrices whose effective rank is reported (apex-spec §8 suggestion) → (sub-module, attribute).
MATRICES: dict[str, tuple[str, str]] = {
    "v": ("self_attn", "v_proj"),
    "o": ("self_attn", "o_proj"),
    "gate": ("mlp", "gate_proj"),
    "up": ("mlp", "up_proj"),
    "down": ("mlp", "down_proj"),
}


@dataclass(frozen=True)
class Geometry:
    """Head layout: H query heads in G KV groups of rep = H/G heads of size d_h; FFN width d_ff."""

    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    d_ff: int

    @property
    def rep(self) -> int:
        """Query heads per KV group (1 for MHA)."""
        return self.n_heads // self.n_kv


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers: the first ModuleList named `…layers` whose items have self_attn and mlp."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers" and len(module) > 0:
            first = module[0]
            if hasattr(first, "self_attn") and hasattr(first, "mlp"):
                return list(module)
    raise ValueError("analysis needs a LLaMA-style decoder (model.layers[i].self_attn / .mlp); none found")


def module_at(layer: nn.Module, name: str) -> nn.Module:
    """Layer's projection `name` (a key of MATRICES, or "q"/"k"), plain or wrapped."""
    sub, attr = MATRICES.get(name, ("self_attn", f"{name}_proj"))
    return getattr(getattr(layer, sub), attr)


def geometry(model: nn.Module) -> Geometry:
    """Read the head geometry from the model config (any wrapper that forwards `.config` works)."""
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    layers = decoder_layers(model)
    d_ff = int(current_weight(module_at(layers[0], "gate")).shape[0])
    return Geometry(len(layers), n_heads, n_kv, head_dim, d_ff)


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
    layers = decoder_layers(model)
    out: dict[str, list[torch.Tensor]] = {}
    for name in MATRICES:
        out[name] = [current_weight(module_at(layer, name)).to(device, copy=True) for layer in layers]
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
