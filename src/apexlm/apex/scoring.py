"""Advantage assessment: per-layer head and channel scores from forward hooks (method §1).

Sources (no transformers fork): the FFN score of channel c is ‖act(gate)[..., c]‖₂ (forward hook on
`mlp.act_fn`, as the official code); the attention score of KV group g is the L2 norm of the o_proj input
(B, T, H·d_h) viewed as (B, T, G, rep·d_h), over positions and the group's dims. Both norms run over the
non-padding positions of the batch's `attention_mask` (captured by a pre-hook on the decoder stack).

Counting: that pre-hook advances a forward id; a layer records at most once per id, so the re-run of a
layer in gradient-checkpoint recompute is not counted twice. Recording happens only in training mode or
inside `assessing` (the stage-1 pass), so validation forwards do not leak into the selection.

Compile-friendly: the per-step state the layer hooks read is tensors only — the forward id,
each layer's last recorded id, accumulators and counts, updated in place — so a compiled model sees no
Python value change from step to step and is not re-traced. The model-level pre-hook sets the mode and
mask attributes (the same values every training step) and moves the state to the input's device once.
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
        self._dev = torch.device("cpu")
        self.acc: dict[str, list[torch.Tensor]] = {}        # per layer (size,) float32
        self._count: dict[str, list[torch.Tensor]] = {}     # per layer () float64: records
        self._last: dict[str, list[torch.Tensor]] = {}      # per layer () long: forward id of the last record
        self._fid = torch.zeros((), dtype=torch.long)      # () long: the current forward id
        self.zero()
        self._on = False
        self._mask: torch.Tensor | None = None
        self.assessing = False
        self._handles: list[Any] = []

    @property
    def count(self) -> dict[str, list[int]]:
        """How many forwards each layer recorded (Python ints; read outside the training graph)."""
        return {kind: [int(c) for c in self._count[kind]] for kind in KINDS}

    def _to(self, dev: torch.device) -> None:
        """Move the recording state to `dev` (once, when the model's device is first seen)."""
        def move(d: dict[str, list[torch.Tensor]]) -> None:
            for kind in d:
                d[kind] = [t.to(dev) for t in d[kind]]
        for d in (self.acc, self._count, self._last):
            move(d)
        self._fid = self._fid.to(dev)
        self._dev = dev

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
        """Once per model forward: new forward id, recording switch, padding mask (B, T) or None.

        Traced into a compiled graph: only tensors change from step to step."""
        first = next((t for t in (*args, *kwargs.values()) if torch.is_tensor(t)), None)
        if first is not None and first.device != self._dev:
            self._to(first.device)
        self._fid.add_(1)
        self._on = module.training or self.assessing
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self._mask = mask if torch.is_tensor(mask) and mask.dim() == 2 else None

    def _ffn_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._on:
                self._record("ffn", i, output, 1)
        return hook

    def _attn_hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if self._on:
                self._record("attn", i, args[0], self.arch.n_kv)
        return hook

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
        """Add this forward's update to layer i's accumulator unless the layer already recorded this id.

        The "already recorded" test is a tensor (`take`), not a Python branch, so it lives in the graph.
        """
        with torch.no_grad():
            a = self._norms(x, units) if kind == "attn" else self._norms(x, 1)   # (n,)
            acc, last = self.acc[kind][i], self._last[kind][i]
            take = last != self._fid                                              # () bool
            last.copy_(self._fid)
            if self.mode in ("rank", "ma_rank"):
                k = self.k[kind]
                delta = torch.zeros_like(a)
                delta[torch.topk(a, k).indices] += 1.0
                delta[torch.topk(a, k, largest=False).indices] -= 1.0
            else:
                delta = a
            if self.mode in ("rank", "avg"):
                acc.add_(torch.where(take, delta, torch.zeros_like(delta)))
            else:
                acc.copy_(torch.where(take, torch.add(acc * 0.9, delta, alpha=0.1), acc))
            self._count[kind][i].add_(take.to(torch.float64))

    # ---- reading, reset, state ---------------------------------------------------------------------
    def scores(self) -> dict[str, list[torch.Tensor]]:
        """Reduced scores on the CPU: {"attn": [(G,)] * L, "ffn": [(d_ff,)] * L}.

        Under torch.distributed this is a collective: every process must call it at the same point.
        """
        flat = [(kind, i) for kind in KINDS for i in range(self.arch.n_layers)]
        dev = self._dev
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            if dist.get_backend() == "nccl":
                dev = torch.device("cuda", torch.cuda.current_device())
        parts = [self.acc[k][i].to(dev) for k, i in flat]
        count = self.count
        total = torch.cat(parts)
        if world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        out: dict[str, list[torch.Tensor]] = {kind: [] for kind in KINDS}
        for (kind, i), part in zip(flat, total.cpu().split([p.numel() for p in parts]), strict=True):
            if self.mode == "avg":
                part = part / (world * max(1, count[kind][i]))
            elif self.mode == "ma":
                part = part / world
            out[kind].append(part.clone())
        return out

    def zero(self) -> None:
        """Forget everything recorded (scores never carry across stages, §1); in place where allocated."""
        n, dev = self.arch.n_layers, self._dev
        for kind in KINDS:
            if kind in self.acc:
                for t in (*self.acc[kind], *self._count[kind]):
                    t.zero_()
            else:
                self.acc[kind] = [torch.zeros(self.size[kind], dtype=torch.float32, device=dev) for _ in range(n)]
                self._count[kind] = [torch.zeros((), dtype=torch.float64, device=dev) for _ in range(n)]
                self._last[kind] = [torch.full((), -1, dtype=torch.long, device=dev) for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        """This process's local accumulators (no collective, safe to call on rank 0 only)."""
        return {"acc": {k: [t.cpu().clone() for t in v] for k, v in self.acc.items()}, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore local accumulators (in place, on the recorder's current device).

        Under DDP/FSDP the training method checkpoints every rank's accumulators and gives each process
        its own (`ApexMethod.state_dict`); a bare Apex checkpoint holds rank 0's only.
        """
        for kind in KINDS:
            for i in range(self.arch.n_layers):
                saved = state["acc"][kind][i]
                if saved is None:
                    self.acc[kind][i].zero_()
                else:
                    self.acc[kind][i].copy_(saved)
                self._count[kind][i].fill_(float(state["count"][kind][i]))
