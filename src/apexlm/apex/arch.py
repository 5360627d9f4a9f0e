"""Architecture introspection for LLaMA-style decoders (spec §1–§3, project decision: GQA by KV group).

APEX touches, in every decoder layer, `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj` and
`mlp.act_fn`. This module finds them, reads the head geometry, and lets other modules swap a projection
for a wrapper and back. Anything else raises `ModelError` naming the supported families.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from apexlm.errors import ModelError

SUPPORTED = (
    "supported: LLaMA, Mistral, Qwen2, SmolLM2 (LlamaForCausalLM-style layouts with "
    "model.layers[i].self_attn.{q,k,v,o}_proj and mlp.{gate,up,down}_proj, mlp.act_fn)"
)

# short name -> (sub-module of the decoder layer, attribute)
PROJ: dict[str, tuple[str, str]] = {
    "q": ("self_attn", "q_proj"),
    "k": ("self_attn", "k_proj"),
    "v": ("self_attn", "v_proj"),
    "o": ("self_attn", "o_proj"),
    "gate": ("mlp", "gate_proj"),
    "up": ("mlp", "up_proj"),
    "down": ("mlp", "down_proj"),
}


@dataclass
class Arch:
    """Where the decoder layers are and their geometry.

    base: the module that owns `.layers` and receives `attention_mask` once per model forward.
    n_heads H, n_kv G, head_dim d_h, rep = H/G q heads per KV group, d_ff FFN width, hidden d.
    """

    base: nn.Module
    layers: list[nn.Module]
    n_heads: int
    n_kv: int
    head_dim: int
    d_ff: int
    hidden: int

    @property
    def rep(self) -> int:
        """q heads per KV group (1 for MHA)."""
        return self.n_heads // self.n_kv

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def proj(self, i: int, name: str) -> nn.Module:
        """The module currently at projection `name` ("q", …, "down") of layer i (plain or wrapped)."""
        sub, attr = PROJ[name]
        return getattr(getattr(self.layers[i], sub), attr)

    def set_proj(self, i: int, name: str, module: nn.Module) -> None:
        """Put `module` at projection `name` of layer i."""
        sub, attr = PROJ[name]
        setattr(getattr(self.layers[i], sub), attr, module)

    def act(self, i: int) -> nn.Module:
        """Layer i's FFN activation module (its output is act(gate), the FFN score source, §1)."""
        return self.layers[i].mlp.act_fn


def _fail(why: str) -> ModelError:
    return ModelError(f"APEX cannot handle this model ({why}); {SUPPORTED}")


def _find_base(model: nn.Module) -> nn.Module:
    """The decoder stack: `model.model` for *ForCausalLM, or the model itself for a base model."""
    for cand in (getattr(model, "model", None), model):
        if cand is not None and isinstance(getattr(cand, "layers", None), nn.ModuleList):
            return cand
    raise _fail("no model.layers ModuleList")


def _own_act_fns(layers: list[nn.Module]) -> None:
    """Give every layer its own `act_fn` object so that one hook records one layer (pitfall 3)."""
    seen: set[int] = set()
    for layer in layers:
        act = layer.mlp.act_fn
        if id(act) in seen:
            layer.mlp.act_fn = copy.deepcopy(act)
        seen.add(id(layer.mlp.act_fn))


def inspect_model(model: nn.Module) -> Arch:
    """Read the layout of a LLaMA-family model; raise ModelError if it is not one."""
    base = _find_base(model)
    layers = list(base.layers)
    if not layers:
        raise _fail("it has no decoder layers")
    config = getattr(model, "config", None) or getattr(base, "config", None)
    if config is None or not hasattr(config, "num_attention_heads"):
        raise _fail("no config.num_attention_heads")
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    hidden = int(config.hidden_size)
    head_dim = int(getattr(config, "head_dim", None) or hidden // n_heads)
    for i, layer in enumerate(layers):
        for name, (sub, attr) in PROJ.items():
            mod = getattr(getattr(layer, sub, None), attr, None)
            if mod is None or getattr(mod, "weight", None) is None or mod.weight.dim() != 2:
                raise _fail(f"layer {i} has no linear {sub}.{attr}")
        if not isinstance(getattr(layer.mlp, "act_fn", None), nn.Module):
            raise _fail(f"layer {i} has no mlp.act_fn module")
    if n_heads % n_kv:
        raise _fail(f"{n_heads} heads are not a multiple of {n_kv} KV heads")
    arch = Arch(base, layers, n_heads, n_kv, head_dim, 0, hidden)
    arch.d_ff = int(arch.proj(0, "gate").weight.shape[0])
    expect = {"q": (n_heads * head_dim, None), "k": (n_kv * head_dim, None), "v": (n_kv * head_dim, None),
              "up": (arch.d_ff, None), "down": (None, arch.d_ff)}
    expect["o"] = (None, n_heads * head_dim)
    expect["gate"] = (arch.d_ff, None)
    for i in range(len(layers)):
        for name, (rows, cols) in expect.items():
            out_f, in_f = arch.proj(i, name).weight.shape
            if (rows is not None and out_f != rows) or (cols is not None and in_f != cols):
                raise _fail(f"layer {i} {name}_proj has shape {(out_f, in_f)}, not the head layout")
    _own_act_fns(layers)
    return arch
