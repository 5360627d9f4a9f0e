"""Architecture introspection for LLaMA-style decoders (method §1–§3; GQA by KV group, method §2).

APEX touches, in every decoder layer, `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj` and
`mlp.act_fn`. This module finds them, reads the head geometry, and lets other modules swap a projection
for a wrapper and back. Anything else raises `ModelError` naming the supported families.

The layout lives here only. The readers (`find_layers`, `read_heads`, `ffn_width`, `proj_of`, `act_of`)
change nothing and also accept peft models, so `apexlm.analysis` builds on them; `inspect_model` adds APEX's
checks and gives every layer its own act_fn.
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


def _fail(why: str) -> ModelError:
    return ModelError(f"APEX cannot handle this model ({why}); {SUPPORTED}")


# ---- read-only layout readers (shared with `apexlm.analysis`, which must not change the model) ----------
def proj_of(layer: nn.Module, name: str) -> nn.Module:
    """The module at projection `name` ("q", …, "down") of a decoder layer: plain, APEX-wrapped or peft."""
    sub, attr = PROJ[name]
    return getattr(getattr(layer, sub), attr)


def act_of(layer: nn.Module) -> nn.Module:
    """A decoder layer's FFN activation module (its output act(gate) is the FFN score source, §1)."""
    return layer.mlp.act_fn


def read_heads(config: object) -> tuple[int, int, int]:
    """(n_heads H, n_kv G, head_dim d_h) from a HF config.

    n_kv defaults to H (MHA). head_dim is `config.head_dim` when set, since it need not equal
    hidden_size // H; configs that leave it unset mean hidden_size // H.
    """
    if config is None or not hasattr(config, "num_attention_heads"):
        raise _fail("no config.num_attention_heads")
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
    return n_heads, n_kv, head_dim


def ffn_width(layer: nn.Module) -> int:
    """d_ff: the output width of the layer's gate_proj (its weight is (d_ff, d)).

    `out_features` first: nn.Linear, APEX's wrappers and peft's tuner layers all keep it (no weight read).
    """
    gate = proj_of(layer, "gate")
    out = getattr(gate, "out_features", None)
    return int(out if out is not None else gate.weight.shape[0])


def _is_stack(module: object) -> bool:
    """A non-empty ModuleList of LLaMA-style decoder layers (its first item has self_attn and mlp)."""
    return (isinstance(module, nn.ModuleList) and len(module) > 0
            and hasattr(module[0], "self_attn") and hasattr(module[0], "mlp"))


def _locate(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """(owner, stack): the first ModuleList named `…layers` at any depth that is a decoder stack, and the
    module holding it as `.layers`. A search rather than a fixed path, because peft nests the stack
    (base_model.model.model.layers)."""
    for name, module in model.named_modules():
        parent, _, leaf = name.rpartition(".")
        if leaf == "layers" and _is_stack(module):
            return model.get_submodule(parent), module
    raise _fail("no ModuleList `layers` of modules with self_attn and mlp")


def find_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a plain, APEX-wrapped or peft model, without changing it."""
    return list(_locate(model)[1])


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
        return proj_of(self.layers[i], name)

    def set_proj(self, i: int, name: str, module: nn.Module) -> None:
        """Put `module` at projection `name` of layer i."""
        sub, attr = PROJ[name]
        setattr(getattr(self.layers[i], sub), attr, module)

    def act(self, i: int) -> nn.Module:
        """Layer i's FFN activation module (its output is act(gate), the FFN score source, §1)."""
        return act_of(self.layers[i])


def _find_base(model: nn.Module) -> nn.Module:
    """The module owning `.layers`: `model.model` for *ForCausalLM, or the model itself for a base model.

    Located like `find_layers`, but deeper owners are refused: APEX swaps projections in place, and inside
    a wrapper such as peft's it would silently replace the adapter layers.
    """
    base, _ = _locate(model)
    if base is not model and base is not getattr(model, "model", None):
        raise _fail("its decoder layers are not at model.layers or model.model.layers")
    return base


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
    config = getattr(model, "config", None) or getattr(base, "config", None)
    n_heads, n_kv, head_dim = read_heads(config)
    hidden = int(config.hidden_size)
    for i, layer in enumerate(layers):
        for sub, attr in PROJ.values():
            mod = getattr(getattr(layer, sub, None), attr, None)
            if mod is None or getattr(mod, "weight", None) is None or mod.weight.dim() != 2:
                raise _fail(f"layer {i} has no linear {sub}.{attr}")
        if not isinstance(getattr(layer.mlp, "act_fn", None), nn.Module):
            raise _fail(f"layer {i} has no mlp.act_fn module")
    if n_heads % n_kv:
        raise _fail(f"{n_heads} heads are not a multiple of {n_kv} KV heads")
    arch = Arch(base, layers, n_heads, n_kv, head_dim, ffn_width(layers[0]), hidden)
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
