"""Advantage assessment: per-layer head and channel scores from forward hooks (method §1).

Sources (no transformers fork): the FFN score of channel c is ‖act(gate)[..., c]‖₂ (forward hook on
`mlp.act_fn`, as the official code); the attention score of KV group g is the L2 norm of the o_proj input
(B, T, H·d_h) viewed as (B, T, G, rep·d_h), over positions and the group's dims. Both norms run over the
non-padding positions of the batch's `attention_mask` (captured by a pre-hook on the decoder stack).

Counting: that pre-hook advances a forward id; a layer records at most once per id, so the re-run of a
layer in gradient-checkpoint recompute is not counted twice. Recording happens only in training mode or
inside `assessing` (the stage-1 pass), so validation forwards do not leak into the selection.
Accumulation is local (float32, exact for integer rank counts below 2^24); `scores()` all-reduces
(SUM; `avg` then divides by the world size) — equal to the official per-forward all-reduce, because
every update is linear in the per-forward contribution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from apexlm.apex.arch import Arch

KINDS = ("attn", "ffn")


class ScoreRecorder:
    """Hooks and accumulators for one model. `mode`: rank | avg | ma | ma_rank (§1)."""

    def __init__(self, arch: Arch, mode: str, k_ratio: float) -> None:
        self.arch, self.mode = arch, mode
        size = {"attn": arch.n_kv, "ffn": arch.d_ff}
        self.size = size
        self.k = {kind: max(1, min(size[kind], int(size[kind] * k_ratio + 1e-9))) for kind in KINDS}
        self.acc: dict[str, list[torch.Tensor | None]] = {kind: [None] * arch.n_layers for kind in KINDS}
        self.count: dict[str, list[int]] = {kind: [0] * arch.n_layers for kind in KINDS}
        self._last = {kind: [-1] * arch.n_layers for kind in KINDS}
        self._fid = 0
        self._on = False
        self._mask: torch.Tensor | None = None
        self.assessing = False
        self._handles: list[Any] = []

    # ---- hooks -------------------------------------------------------------------------------------
    def attach(self) -> None:
        """(Re)install hooks on the modules that are in the model now (wrappers included, pitfall 3)."""
        self.detach()
        a = self.arch
        self._handles.append(a.base.register_forward_pre_hook(self._on_model, with_kwargs=True))
        for i in range(a.n_layers):
            self._handles.append(a.act(i).register_forward_hook(self._ffn_hook(i)))
            self._handles.append(a.proj(i, "o").register_forward_pre_hook(self._attn_hook(i)))

    def detach(self) -> None:
        """Remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_model(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Once per model forward: new forward id, recording switch, padding mask (B, T) or None."""
        self._fid += 1
        self._on = module.training or self.assessing
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self._mask = mask if torch.is_tensor(mask) and mask.dim() == 2 else None

    def _ffn_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._take("ffn", i):
                self._record("ffn", i, output, 1)
        return hook

    def _attn_hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if self._take("attn", i):
                self._record("attn", i, args[0], self.arch.n_kv)
        return hook

    def _take(self, kind: str, i: int) -> bool:
        if not self._on or self._last[kind][i] == self._fid:
            return False
        self._last[kind][i] = self._fid
        return True

    # ---- accumulation ------------------------------------------------------------------------------
    def _norms(self, x: torch.Tensor, units: int) -> torch.Tensor:
        """x (B, T, D) → per-unit L2 norm (units,) over non-padding positions; D = units · unit width.

        One (1, B·T) @ (B·T, D) product of the 0/1 mask with x² gives every squared norm at once: this hook
        runs on every training forward, and the product is ~6× cheaper than masking x and reducing it.
        """
        x = x.detach()
        flat = x.reshape(-1, x.shape[-1]).float().square()                    # (B·T, D)
        mask = self._mask
        if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
            sq = mask.to(device=x.device, dtype=flat.dtype).reshape(1, -1) @ flat   # (1, D)
        else:
            sq = flat.sum(0, keepdim=True)                                    # (1, D)
        sq = sq.reshape(units, -1).sum(-1) if units > 1 else sq.reshape(-1)   # (units,) or (D,)
        return sq.sqrt()

    def _record(self, kind: str, i: int, x: torch.Tensor, units: int) -> None:
        with torch.no_grad():
            a = self._norms(x, units) if kind == "attn" else self._norms(x, 1)   # (n,)
            acc = self.acc[kind][i]
            if acc is None:
                acc = torch.zeros(a.numel(), dtype=torch.float32, device=a.device)
            elif acc.device != a.device:
                acc = acc.to(a.device)
            if self.mode in ("rank", "ma_rank"):
                k = self.k[kind]
                delta = torch.zeros_like(a)
                delta[torch.topk(a, k).indices] += 1.0
                delta[torch.topk(a, k, largest=False).indices] -= 1.0
            else:
                delta = a
            if self.mode in ("rank", "avg"):
                acc.add_(delta)
            else:
                acc.mul_(0.9).add_(delta, alpha=0.1)
            self.acc[kind][i] = acc
            self.count[kind][i] += 1

    # ---- reading, reset, state ---------------------------------------------------------------------
    def scores(self) -> dict[str, list[torch.Tensor]]:
        """Reduced scores on the CPU: {"attn": [(G,)] * L, "ffn": [(d_ff,)] * L}.

        Under torch.distributed this is a collective: every process must call it at the same point.
        """
        flat = [(kind, i) for kind in KINDS for i in range(self.arch.n_layers)]
        dev = next((t.device for k in KINDS for t in self.acc[k] if t is not None), torch.device("cpu"))
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            if dist.get_backend() == "nccl":
                dev = torch.device("cuda", torch.cuda.current_device())
        parts = [self.acc[k][i].to(dev) if self.acc[k][i] is not None
                 else torch.zeros(self.size[k], dtype=torch.float32, device=dev) for k, i in flat]
        total = torch.cat(parts)
        if world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        out: dict[str, list[torch.Tensor]] = {kind: [] for kind in KINDS}
        for (kind, i), part in zip(flat, total.cpu().split([p.numel() for p in parts])):
            if self.mode == "avg":
                part = part / (world * max(1, self.count[kind][i]))
            elif self.mode == "ma":
                part = part / world
            out[kind].append(part.clone())
        return out

    def zero(self) -> None:
        """Forget everything recorded (scores never carry across stages, §1)."""
        for kind in KINDS:
            self.acc[kind] = [None] * self.arch.n_layers
            self.count[kind] = [0] * self.arch.n_layers

    def state_dict(self) -> dict[str, Any]:
        """This process's local accumulators (no collective, safe to call on rank 0 only)."""
        return {"acc": {k: [None if t is None else t.cpu().clone() for t in v] for k, v in self.acc.items()},
                "count": {k: list(v) for k, v in self.count.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore local accumulators (moved to the activations' device on the next record).

        Under DDP every process loads the saved (rank-0) partial sums, which approximates the other
        ranks' contributions of the interrupted stage by rank 0's.
        """
        self.acc = {k: [None if t is None else t.clone() for t in v] for k, v in state["acc"].items()}
        self.count = {k: list(v) for k, v in state["count"].items()}
