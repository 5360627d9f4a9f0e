"""Per-device memory plan of one training run, computed from a prepared meta-device model (nothing allocated).

Why: a 7B APEX run must be placed (DDP or FSDP, how many GPUs, checkpointing on or off) before anyone rents
eight GPUs. The plan counts, per device, in bytes:

- weights: every parameter (base + s2 + operators / adapters) in float32. The builders keep float32
  parameters and bf16-mixed autocasts per op, so the parameters ARE the master weights: there is no separate
  master copy. Under FSDP each device holds 1/N of them (fp32 shards) plus the all-gathered working set
  (`fsdp_unsharded`: two units in the compute dtype, the running one and the prefetched one, and their
  unsharded gradients before the fp32 reduce-scatter).
- gradients: one float32 gradient per trainable parameter (1/N under FSDP).
- optimizer: AdamW keeps two float32 moments per trainable parameter (1/N under FSDP); the step itself needs
  a temporary: on GPU (foreach AdamW) one float32 copy of all trainable parameters, on CPU (per-tensor AdamW)
  one of the largest trainable tensor.
- ddp_buckets: DDP's gradient buckets, a second float32 copy of the trainable gradients (strategy=ddp).
- activations: what autograd saves for backward, per decoder layer, from this model of the LLaMA decoder
  (HF `LlamaDecoderLayer`, SDPA flash / memory-efficient attention without a padding mask; per token, h hidden,
  f FFN, kv the key/value width): the layer input and the residual after attention; each RMSNorm's normalised
  value (only if that norm's weight trains); the projections' inputs (only if a projection reading them trains);
  q, k, v after RoPE (k, v at the KV width: SDPA's native GQA) and the attention output (o_proj reads a view
  of it: the kernels write it token-major); the softmax log-sum-exp (float32, one per head); gate, up and
  SiLU(gate), and SiLU(gate)·up (only if down trains). Full fine-tuning in float32: 8h + 2kv + 4f + heads
  elements. Under bf16-mixed the residual stream and the RMSNorm values stay float32 and the linear
  inputs/outputs are bf16, and every projection weight is also held as a saved bf16 autocast copy (not under
  FSDP, whose all-gather is already bf16).
  What a method's projection modules save beyond their input is traced on the meta device with one and two
  tokens, which splits it into a weight-side part (DoRA's norms; APEX's span form keeps none) and a
  per-token part (LoRA's x·A), at the parameters' dtype (float32: an upper bound under bf16-mixed).
  Loss: three (B·T, V) float32 tensors are alive at the loss (logits, the shifted copy / its gradient, the
  log-softmax). Gradient checkpointing (HF, per decoder layer) keeps only each layer's input and recomputes
  one layer at a time in backward.
- Peak: backward frees a layer's saved tensors while it allocates that layer's gradients, so the peak of
  the backward pass sits at one of its two ends: all activations + the head's gradients (start), or one
  layer's activations + all gradients (end); the optimizer step adds its temporary to weights + gradients +
  moments. per_device = weights + optimizer + max(backward, gradients + step temporary) + buckets/working set.
Not modelled: the math attention kernel (a padding mask on CPU; it also saves heads·T² scores), allocator
fragmentation/caching (on GPU leave ~10 % head room), DeepSpeed (see training/strategy_check.py).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

GB = 1024**3
STRATEGIES = ("single", "ddp", "fsdp")
PRECISIONS = ("bf16-mixed", "32-true")
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Setup:
    """One run's placement: `strategy` single|ddp|fsdp over `devices`, `micro_batch` x `seq` tokens per step."""

    strategy: str
    devices: int
    seq: int
    micro_batch: int
    accelerator: str = "gpu"
    precision: str = "bf16-mixed"
    checkpointing: bool = False

    @property
    def tokens(self) -> int:
        return self.seq * self.micro_batch


def unit_of(name: str) -> int:
    """Decoder-layer index of a parameter name (FSDP unit), -1 for the root (embeddings, final norm, head)."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else -1


def param_stats(model: nn.Module) -> dict[str, Any]:
    """Per-unit counts of a (meta) model, each shared tensor once: params, trainable, largest trainable."""
    seen: set[int] = set()
    params: dict[int, int] = defaultdict(int)
    trainable: dict[int, int] = defaultdict(int)
    largest = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        unit = unit_of(name)
        params[unit] += p.numel()
        if p.requires_grad:
            trainable[unit] += p.numel()
            largest = max(largest, p.numel())
    return {"params": dict(params), "trainable": dict(trainable), "largest": largest}


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a HF causal LM, through any wrapper (peft) around it."""
    for name, mod in model.named_modules():
        if name.endswith("layers") and isinstance(mod, nn.ModuleList):
            return list(mod)
    raise ValueError("no decoder `layers` ModuleList found in the model")


def _traced_bytes(layer: nn.Module, tokens: int) -> int:
    """Bytes the layer's projections save for backward beyond their inputs, for `tokens` tokens, on meta.

    Tensors that are (views of) parameters or buffers are not counted (they are in `weights`), nor the
    projection's input (the token model counts it).
    """
    owned = {id(t) for t in (*layer.parameters(), *layer.buffers())}
    saved: dict[int, torch.Tensor] = {}
    inputs: list[torch.Tensor] = []  # kept alive: a freed input's id could be reused by a saved tensor

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in owned:
            saved[id(base)] = base  # keep a reference so ids stay unique
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for path in PROJECTIONS:
            mod = layer.get_submodule(path)
            width = getattr(mod, "in_features", None) or mod.weight.shape[1]
            dtype = next(mod.parameters()).dtype
            x = torch.zeros(tokens, int(width), device="meta", dtype=dtype, requires_grad=True)  # (tokens, in)
            owned.add(id(x))
            inputs.append(x)
            mod(x)
    return sum(t.numel() * t.element_size() for t in saved.values())


def method_saved_bytes(layer: nn.Module) -> tuple[int, int]:
    """(weight-side bytes, extra bytes per token) a method's projection modules save, traced with 1 and 2 tokens.

    Plain nn.Linear saves only its input: (0, 0). APEX wrappers save the effective weights they build each
    forward (method §3): weight-side. LoRA/DoRA save their rank-r intermediate x·A: per token.
    """
    one, two = _traced_bytes(layer, 1), _traced_bytes(layer, 2)
    return max(0, 2 * one - two), max(0, two - one)


def _trains(mod: nn.Module) -> bool:
    return any(p.requires_grad for p in mod.parameters())


def layer_flags(layer: nn.Module) -> dict[str, bool]:
    """Which parts of a decoder layer train: decides which inputs autograd must keep."""
    f = {path: _trains(layer.get_submodule(path)) for path in PROJECTIONS}
    f["norm1"], f["norm2"] = _trains(layer.input_layernorm), _trains(layer.post_attention_layernorm)
    return f


def token_bytes_per_layer(hf_config: Any, precision: str, flags: dict[str, bool] | None = None) -> int:
    """Bytes autograd saves per token in one decoder layer (the model in the module docstring).

    A frozen RMSNorm weight does not need its normalised input, a frozen projection does not need its input
    (`flags`, from `layer_flags`; all True = full fine-tuning).
    """
    fl = flags or {}
    on = {k: fl.get(k, True) for k in (*PROJECTIONS, "norm1", "norm2")}
    h, f = int(hf_config.hidden_size), int(hf_config.intermediate_size)
    heads = int(hf_config.num_attention_heads)
    kv = int(getattr(hf_config, "num_key_value_heads", None) or heads) * (h // heads)
    y1 = any(on[p] for p in PROJECTIONS[:3])
    y2 = on["mlp.gate_proj"] or on["mlp.up_proj"]
    wide, lin = (4, 2) if precision == "bf16-mixed" else (4, 4)   # fp32 residual/norms; linear in/out dtype
    resid = wide * h * (2 + on["norm1"] + on["norm2"])            # x, r1 (+ normed1, normed2)
    attn = lin * (h * (1 + y1) + 2 * kv + h) + 4 * heads           # (y1), q, k, v, out (o_proj reads a view); lse
    mlp = lin * (h * y2 + f * (3 + on["mlp.down_proj"]))          # (y2), gate, up, SiLU(gate), (product)
    return resid + attn + mlp


def plan(model: nn.Module, hf_config: Any, setup: Setup) -> dict[str, float]:
    """Per-device bytes of each part and `per_device` (the predicted peak) for `model` (prepared, meta)."""
    if setup.strategy not in STRATEGIES:
        raise ValueError(f"strategy {setup.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if setup.precision not in PRECISIONS:
        raise ValueError(f"precision {setup.precision!r}: choose one of {', '.join(PRECISIONS)}")
    st = param_stats(model)
    layers = decoder_layers(model)
    n_layers, tok = len(layers), setup.tokens
    shard = setup.devices if setup.strategy == "fsdp" else 1
    mixed = setup.precision == "bf16-mixed"
    compute_bytes = 2 if mixed else 4
    total_params, total_train = sum(st["params"].values()), sum(st["trainable"].values())

    weights = 4 * total_params / shard
    grads = 4 * total_train / shard
    optimizer = 2 * 4 * total_train / shard
    step_tmp = 4 * (total_train / shard if setup.accelerator == "gpu" else st["largest"])
    buckets = 4 * total_train if setup.strategy == "ddp" else 0.0
    unsharded = 0.0
    if setup.strategy == "fsdp":
        unit_max = max(st["params"].values())
        unsharded = 2 * unit_max * (compute_bytes + compute_bytes + 4)  # params + grads + fp32 reduce copy

    h, vocab = int(hf_config.hidden_size), int(hf_config.vocab_size)
    autocast_copy = mixed and setup.strategy != "fsdp"
    layer_acts = []                                                   # one layer, everything it saves
    for layer in layers:
        copies = sum(layer.get_submodule(p).weight.numel() for p in PROJECTIONS) if autocast_copy else 0
        wside, per_tok = method_saved_bytes(layer)
        layer_acts.append((token_bytes_per_layer(hf_config, setup.precision, layer_flags(layer)) + per_tok) * tok
                          + wside + 2 * copies)
    norm, head = _final_parts(model)
    final = (4 + 4 * norm + (2 if mixed else 4) * head) * h * tok     # final norm: input (+ normed, output)
    loss = 3 * 4 * vocab * tok                                        # three (B·T, V) fp32 tensors
    resid = 4 * h * tok                                               # a checkpointed layer's input (fp32)
    acts_full = sum(layer_acts) + final + loss
    acts_ckpt = n_layers * resid + max(layer_acts) + final + loss
    acts = acts_ckpt if setup.checkpointing else acts_full

    head_grads = 4 * st["trainable"].get(-1, 0) / shard
    last_grads = 4 * st["trainable"].get(n_layers - 1, 0) / shard
    if setup.checkpointing:  # start, recompute of the last layer, end of backward
        ends = (n_layers * resid + final + loss + head_grads,
                n_layers * resid + max(layer_acts) + head_grads + last_grads,
                resid + max(layer_acts) + grads)
    else:
        ends = (acts_full + head_grads, layer_acts[0] + grads)
    backward = max(ends)
    peak = weights + optimizer + max(backward, grads + step_tmp) + buckets + unsharded
    return {"weights": weights, "gradients": grads, "optimizer": optimizer, "optimizer_step_tmp": step_tmp,
            "ddp_buckets": buckets, "fsdp_unsharded": unsharded, "activations": acts,
            "activations_no_ckpt": acts_full, "activations_ckpt": acts_ckpt, "per_device": peak,
            "params": float(total_params), "trainable": float(total_train)}


def _final_parts(model: nn.Module) -> tuple[bool, bool]:
    """Whether the final norm and the LM head train (then their inputs are saved)."""
    head = model.get_output_embeddings()
    norm = next((m for n, m in model.named_modules() if n.endswith("model.norm")), None)
    return (norm is not None and _trains(norm)), (head is not None and _trains(head))


def dominant(p: dict[str, float]) -> str:
    """The largest state term, for the 'does not fit because' line."""
    keys = ("weights", "gradients", "optimizer", "ddp_buckets", "activations")
    return max(keys, key=lambda k: p[k])


def format_plan(p: dict[str, float], setup: Setup, capacity_gb: float | None = None) -> list[str]:
    """Printable lines; the last one is `per_device_gb=<float>`."""
    gb = {k: v / GB for k, v in p.items()}
    shard = f"sharded over {setup.devices}" if setup.strategy == "fsdp" else "replicated on every device"
    ckpt = "on" if setup.checkpointing else "off"
    lines = [
        f"plan: strategy={setup.strategy} devices={setup.devices} seq={setup.seq} micro_batch={setup.micro_batch} "
        f"precision={setup.precision} accelerator={setup.accelerator} gradient_checkpointing={ckpt}",
        f"parameters {p['params']:,.0f} (trainable {p['trainable']:,.0f}); states {shard}",
        f"{'weights (fp32; they are the master weights)':<48}{gb['weights']:>9.2f} GB",
        f"{'gradients (fp32, trainable)':<48}{gb['gradients']:>9.2f} GB",
        f"{'optimizer (AdamW: 2 fp32 moments, trainable)':<48}{gb['optimizer']:>9.2f} GB",
        f"{'optimizer step temporary':<48}{gb['optimizer_step_tmp']:>9.2f} GB",
    ]
    if setup.strategy == "ddp":
        lines.append(f"{'DDP gradient buckets (fp32)':<48}{gb['ddp_buckets']:>9.2f} GB")
    if setup.strategy == "fsdp":
        lines.append(f"{'FSDP unsharded working set (2 units)':<48}{gb['fsdp_unsharded']:>9.2f} GB")
    lines += [f"{'activations, gradient checkpointing off':<48}{gb['activations_no_ckpt']:>9.2f} GB",
              f"{'activations, gradient checkpointing on':<48}{gb['activations_ckpt']:>9.2f} GB",
              f"{'peak per device (as configured)':<48}{gb['per_device']:>9.2f} GB"]
    if capacity_gb is not None and gb["per_device"] > capacity_gb:
        states = sum(gb[k] for k in ("weights", "gradients", "optimizer", "ddp_buckets"))
        top = dominant(p)
        lines.append(f"does not fit {capacity_gb:g} GB per device: weights + gradients + AdamW moments"
                     f"{' + DDP buckets' if setup.strategy == 'ddp' else ''} alone take {states:.1f} GB, "
                     f"{shard}; the largest part is {top.replace('_', ' ')} ({gb[top]:.1f} GB); "
                     "--strategy fsdp shards them")
    elif capacity_gb is not None:
        lines.append(f"fits {capacity_gb:g} GB per device")
    lines.append(f"per_device_gb={gb['per_device']:.2f}")
    return lines
