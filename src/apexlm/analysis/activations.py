"""Activation-magnitude distribution per layer for heads (KV groups) and FFN channels (method §8).

A unit's magnitude is the L2 norm of its activations over the non-padding tokens of a fixed set of batches:
  head (KV group g): the o_proj input (B, T, H·d_h) viewed as (B, T, G, rep·d_h), norm over tokens and the
      group's dims — the same source APEX scores heads with;
  FFN channel c: act(gate)[..., c] (B, T, d_ff), the source APEX scores channels with (§1), taken from
      gate_proj's output so that a shared act_fn object cannot mix layers up.
Within a layer, magnitudes are divided by the layer mean; the spec's "more uniform = stronger" claim is read
off the std of these normalised values and the share of units above the layer mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.analysis.model_view import Geometry, geometry
from apexlm.apex.arch import act_of, find_layers, proj_of

KINDS = ("attn", "ffn")


class _Recorder:
    """Forward hooks that add masked sums of squares per unit; `mask` is set before each forward."""

    def __init__(self, model: nn.Module, geo: Geometry) -> None:
        self.geo = geo
        self.mask: torch.Tensor | None = None                                  # (B, T) bool
        layers = find_layers(model)
        self.sq = {"attn": [torch.zeros(geo.n_kv, dtype=torch.float64) for _ in layers],
                   "ffn": [torch.zeros(geo.d_ff, dtype=torch.float64) for _ in layers]}
        self.handles = []
        for i, layer in enumerate(layers):
            self.handles.append(proj_of(layer, "o").register_forward_pre_hook(self._attn(i)))
            self.handles.append(proj_of(layer, "gate").register_forward_hook(self._ffn(i, act_of(layer))))

    def _masked_sq(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, U, D) → (U,) sum of squares over non-padding tokens and D, float64 on CPU."""
        x = x.float()
        if self.mask is not None:
            x = x * self.mask[:, :, None, None].to(x.device, x.dtype)
        return x.pow(2).sum(dim=(0, 1, 3)).double().cpu()

    def _attn(self, i: int):
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]                                                        # (B, T, H·d_h)
            b, t, _ = x.shape
            self.sq["attn"][i] += self._masked_sq(x.reshape(b, t, self.geo.n_kv, -1))   # (G,)
        return hook

    def _ffn(self, i: int, act: nn.Module):
        def hook(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> None:
            a = act(out)                                                       # (B, T, d_ff)
            self.sq["ffn"][i] += self._masked_sq(a.unsqueeze(-1))              # (d_ff,)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def activation_magnitudes(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]
                          ) -> dict[str, list[torch.Tensor]]:
    """{"attn": [(G,)] per layer, "ffn": [(d_ff,)] per layer}: per-unit L2 norms over non-padding tokens.

    Runs in eval mode under no_grad (so APEX's score recorders do not count these forwards) and restores
    the training flag afterwards.
    """
    geo = geometry(model)
    rec = _Recorder(model, geo)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            ids = batch["input_ids"].to(device)                                # (B, T)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask.to(device)   # (B, T)
            rec.mask = mask.bool()
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        rec.remove()
        model.train(was_training)
    return {kind: [s.sqrt().float() for s in rec.sq[kind]] for kind in KINDS}


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(x.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {"p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2]), "max": float(x.max())}


def normalised(mags: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Each layer's magnitudes divided by the layer mean (so 1.0 = an average unit)."""
    return {kind: [m / m.mean().clamp(min=1e-30) for m in per_layer] for kind, per_layer in mags.items()}


def distribution_stats(mags: dict[str, list[torch.Tensor]]) -> dict[str, dict[str, Any]]:
    """Per kind: per-layer std of the normalised magnitudes, share of units above the layer mean, quantiles,
    and their means over layers (`std_mean`, `share_above_mean_mean`). Lower std = more uniform units."""
    out: dict[str, dict[str, Any]] = {}
    for kind, per_layer in normalised(mags).items():
        std = [float(r.std(correction=0)) for r in per_layer]
        above = [float((r > 1.0).float().mean()) for r in per_layer]
        out[kind] = {"std": std, "share_above_mean": above, "quantiles": [_quantiles(r) for r in per_layer],
                     "std_mean": sum(std) / len(std), "share_above_mean_mean": sum(above) / len(above),
                     "units": int(per_layer[0].numel())}
    return out
