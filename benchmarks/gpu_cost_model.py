"""GPU cost model of APEX's operators, counted without a GPU (method §3.7).

    python benchmarks/gpu_cost_model.py [--gpu h100|h200] [--cpu-json layer.json] [--json out.json]

For one decoder layer of LLaMA-2-7B (4096 hidden, 32/32 heads, ffn 11008) and TinyLlama-1.1B (2048, 32/4,
5632) at 4k and 16k tokens per micro-batch (and TinyLlama at the CPU proxy's 1024), every aten op of a
forward + backward (input gradient included, as for a middle layer) is recorded on the meta device by a
TorchDispatchMode: FLOPs (2·m·n·k for matrix products, one per output element otherwise; attention is
modelled as one flash kernel each way: 4·T²·d per head halved for the causal mask, ×2.5 for backward), bytes moved (every tensor
argument read plus every output written, views free) and kernel launches (one per non-view op). The
roofline estimate of an op is max(FLOPs / (peak·0.7), bytes / (bandwidth·0.8), 2 µs); a layer's is the
sum. bf16 weights and activations; the optimizer step is not included (it is per optimizer step, not per
micro-batch). Variants: the plain layer trainable (vanilla / full FT), APEX IT and APEX CPT as
implemented now (`span`), and the pre-issue-13 weight-side oracle (`weight`, tests/apex/oracle_wrappers.py).
Prints a per-projection and a per-layer table and `gpu_estimate[<model>,<tokens>,<it|cpt>]=` ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from apexlm.apex import Apex, ApexConfig  # noqa: E402
from apexlm.apex.expanded_linear import ColumnWrapper, ExpandedLinear  # noqa: E402

GPUS = {"h100": (989e12, 3.35e12), "h200": (989e12, 4.8e12)}      # dense bf16 FLOP/s, HBM bytes/s
MODELS = {"llama2-7b": (4096, 32, 32, 11008), "tinyllama-1.1b": (2048, 32, 4, 5632)}
PROJ = ("q", "k", "v", "o", "gate", "up", "down")
MATMUL = {"mm", "addmm", "bmm", "baddbmm", "addmm_", "baddbmm_"}
FREE = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
        "_unsafe_view"}
ACTIVE: list["OpCounter"] = []


class _FlashCount(torch.autograd.Function):
    """A flash-attention kernel as the GPU runs it (one launch each way, no T×T tensor): records its
    FLOPs and bytes into the active counter and returns an empty output of the right shape."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, t, d = q.shape                                                  # (B, H, T, d)
        flops = 4.0 * b * h * t * k.shape[-2] * d * 0.5                       # causal: half the scores
        nbytes = sum(x.numel() * x.element_size() for x in (q, k, v, q)) + b * h * t * 4
        ACTIVE[-1].ops.append(("flash_attention", flops, float(nbytes)))
        ACTIVE[-1].trace.append(Access("flash_attention", flops, [], [(0, int(nbytes))]))
        ctx.shapes = (q, k, v)
        ctx.save_for_backward(q, k, v)
        return q.new_empty(b, t, h, d)                                         # (B, T, H, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v = ctx.saved_tensors
        b, h, t, d = q.shape
        flops = 2.5 * 4.0 * b * h * t * k.shape[-2] * d * 0.5
        nbytes = 2 * sum(x.numel() * x.element_size() for x in (q, k, v)) + 2 * q.numel() * q.element_size()
        ACTIVE[-1].ops.append(("flash_attention_backward", flops, float(nbytes)))
        ACTIVE[-1].trace.append(Access("flash_attention_backward", flops, [], [(0, int(nbytes))]))
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def counted_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: q (B, H, T, d), k/v (B, KV, S, d) → (B, T, H, d), None."""
    return _FlashCount.apply(query, key, value), None


class OpCounter(TorchDispatchMode):
    """Sums FLOPs, bytes and launches of every aten op run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, float, float]] = []
        self.trace: list[Access] = []            # the same ops with the buffers they read and write
        self._ids: dict[int, int] = {}           # storage address → current buffer id
        self._next_id = 0

    def barrier(self) -> None:
        """Forward | backward: no kernel fuses across it."""
        self.trace.append(Access("barrier", 0.0, [], []))

    def __enter__(self):
        ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        ACTIVE.pop()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if getattr(func, "is_view", False) or name in FREE:
            if name.startswith(("empty", "new_empty")):              # a fresh allocation: a new buffer
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        self._buf(t, fresh_unless=set())
            return out
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if "out" in kwargs:
            outs = []                                    # the out= tensor is already among the inputs
        nbytes = sum(t.numel() * t.element_size() for t in ins + outs)
        flops = _flops(name, args, outs)
        self.ops.append((name, flops, float(nbytes)))
        written = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        reads = [self._buf(t) for t in ins if not any(t is w for w in written)]
        read_ids = {k for k, _ in reads} | {self._buf(t)[0] for t in ins if any(t is w for w in written)}
        writes = [self._buf(t, fresh_unless=read_ids) for t in written]
        self.trace.append(Access(name, flops, reads, writes))
        return out

    def _buf(self, t: torch.Tensor, fresh_unless: set[int] | None = None) -> tuple[int, int]:
        """(buffer id, bytes) of t. A storage address freed and reused later is a new buffer: an op's output
        gets a new id unless it writes into a storage the op also reads (in-place, out=)."""
        key = t.untyped_storage()._cdata
        if key not in self._ids or (fresh_unless is not None and self._ids[key] not in fresh_unless):
            self._ids[key] = self._next_id
            self._next_id += 1
        return self._ids[key], t.numel() * t.element_size()


@dataclass
class Access:
    """One op: its FLOPs and the (storage, bytes) it reads and writes (views share their base's storage)."""

    name: str
    flops: float
    reads: list[tuple[int, int]]
    writes: list[tuple[int, int]]


def _unfused(name: str) -> bool:
    return name in MATMUL or name.startswith("flash_attention") or name == "barrier"


def fused_ops(trace: list[Access]) -> list[tuple[str, float, float]]:
    """The trace as it would run with every run of elementwise/reduction ops between two matrix products
    fused into one kernel (what torch.compile or a hand-written Triton kernel can reach; eager does not).

    A fused kernel reads each buffer produced outside it once and writes each buffer it produces once,
    except temporaries (read again inside the run and by nothing after it). Matrix products and flash
    attention stay as recorded. The result bounds what fusing the elementwise work can buy; the
    matrix products (the Monarch's included) keep their own passes over memory.
    """
    out: list[tuple[str, float, float]] = []
    later_reads: list[set[int]] = [set() for _ in trace]
    seen: set[int] = set()
    for i in range(len(trace) - 1, -1, -1):
        later_reads[i] = set(seen)
        seen |= {k for k, _ in trace[i].reads}
    i = 0
    while i < len(trace):
        op = trace[i]
        if _unfused(op.name):
            if op.name != "barrier":
                out.append((op.name, op.flops, float(sum(b for _, b in op.reads + op.writes))))
            i += 1
            continue
        j = i
        while j < len(trace) and not _unfused(trace[j].name):
            j += 1
        produced: dict[int, int] = {}
        reads: dict[int, int] = {}
        inner: set[int] = set()                       # produced here and read again inside the run
        for op in trace[i:j]:
            for k, b in op.reads:
                if k in produced:
                    inner.add(k)
                else:
                    reads[k] = max(reads.get(k, 0), b)
            for k, b in op.writes:
                produced[k] = max(produced.get(k, 0), b)
        after = later_reads[j - 1]
        # a temporary (consumed inside the run, read by nothing after it) stays in registers; every other
        # buffer produced here is written once (a later op, or the caller: a gradient, a saved tensor)
        written = sum(b for k, b in produced.items() if not (k in inner and k not in after))
        out.append(("fused[" + ",".join(op.name for op in trace[i:j]) + "]",
                    sum(op.flops for op in trace[i:j]), float(sum(reads.values()) + written)))
        i = j
    return out


def _flops(name: str, args: tuple, outs: list[torch.Tensor]) -> float:
    if name in MATMUL:
        a, b = (args[1], args[2]) if name.startswith(("addmm", "baddbmm")) else (args[0], args[1])
        batch = a.shape[0] if a.dim() == 3 else 1
        return 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
    return float(sum(t.numel() for t in outs))


def roofline_s(ops: list[tuple[str, float, float]], gpu: str) -> float:
    peak, bw = GPUS[gpu]
    return sum(max(f / (0.7 * peak), b / (0.8 * bw), 2e-6) for _, f, b in ops)


def _to_weight_side(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose expanded modules are the pre-issue-13 weight-side oracle (same Parameters)."""
    from tests.apex import oracle_wrappers as oracle

    for name, mod in list(model.named_modules()):
        if not isinstance(mod, ExpandedLinear):
            continue
        if isinstance(mod, ColumnWrapper):
            new = oracle.ColumnWrapper(mod, mod.tuned_end, mod.n_mix, mod.shared, mod.s2 is not None,
                                       mod.mix_channels)
            new.mixer_scale = mod.mixer_scale if mod.mixer_scale is not None else getattr(new, "mixer_scale", None)
        else:
            new = oracle.RowWrapper(mod, mod.tuned_end, mod.groups, mod.slots, mod.inner, mod.shared,
                                    mod.s2 is not None, mod.mix_channels)
        if mod.s2 is not None:
            new.s2 = mod.s2
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    return model


def build_layer(model_name: str, tokens: int, variant: str) -> tuple[torch.nn.Module, Any]:
    """A meta-device 1-layer model of `model_name` prepared as `variant`; returns (layer, arch)."""
    hidden, heads, kv, ffn = MODELS[model_name]
    cfg = LlamaConfig(vocab_size=32, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=ffn, max_position_embeddings=tokens,
                      use_cache=False, attention_dropout=0.0)
    from transformers import AttentionInterface

    AttentionInterface.register("counted_attn", counted_attention)
    cfg._attn_implementation = "counted_attn"
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    kind, impl = (variant.split("-") + ["span"])[:2]
    if kind in ("it", "cpt"):
        acfg = ApexConfig() if kind == "it" else ApexConfig(k_ratio=0.125, tuned_attn_ratio=None,
                                                            tuned_ffn_ratio=None, base_trainable=True,
                                                            finetune_qk=False)
        apex = Apex(model, acfg)
        g = torch.Generator().manual_seed(0)
        apex.expand({"attn": [torch.rand(kv, generator=g)], "ffn": [torch.rand(ffn, generator=g)]})
        apex.close()
        if impl == "weight":
            model = _to_weight_side(model)
    else:
        model.requires_grad_(True)
    return model.model.layers[0], model


def count_layer(model_name: str, tokens: int, variant: str) -> dict[str, list]:
    """Ops of fwd+bwd of each projection alone and of the whole layer (`<variant>-fused`: `fused_ops`)."""
    fused = variant.endswith("-fused")
    variant = variant.removesuffix("-fused")
    layer, model = build_layer(model_name, tokens, variant)
    hidden = MODELS[model_name][0]
    res: dict[str, list] = {}
    mods = {"q": layer.self_attn.q_proj, "k": layer.self_attn.k_proj, "v": layer.self_attn.v_proj,
            "o": layer.self_attn.o_proj, "gate": layer.mlp.gate_proj, "up": layer.mlp.up_proj,
            "down": layer.mlp.down_proj}
    for name, mod in mods.items():
        x = torch.empty(1, tokens, mod.in_features, device="meta", dtype=torch.bfloat16, requires_grad=True)
        with OpCounter() as c:
            y = mod(x)
            c.barrier()
            y.backward(torch.empty(1, tokens, mod.out_features, device="meta", dtype=torch.bfloat16))
        res[name] = fused_ops(c.trace) if fused else c.ops
    x = torch.empty(1, tokens, hidden, device="meta", dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(tokens, device="meta")[None]
    pe = model.model.rotary_emb(x, pos)
    with OpCounter() as c:
        out = layer(x, attention_mask=None, position_ids=pos, position_embeddings=pe)
        out = out[0] if isinstance(out, tuple) else out
        c.barrier()
        out.backward(torch.empty_like(out))
    res["layer"] = fused_ops(c.trace) if fused else c.ops
    return res


def _sum(ops: list) -> tuple[float, float, int]:
    return sum(f for _, f, _ in ops), sum(b for _, _, b in ops), len(ops)


def run(cases: list[tuple[str, int]], gpu: str, variants: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model_name, tokens in cases:
        counts = {v: count_layer(model_name, tokens, v) for v in variants}
        entry: dict[str, Any] = {}
        for part in (*PROJ, "layer"):
            entry[part] = {v: {"gflop": _sum(counts[v][part])[0] / 1e9, "mb": _sum(counts[v][part])[1] / 2**20,
                               "launches": _sum(counts[v][part])[2],
                               "us": 1e6 * roofline_s(counts[v][part], gpu)} for v in variants}
        out[f"{model_name},{tokens}"] = entry
    return out


def format_cost(res: dict[str, Any], gpu: str, cpu: dict[str, Any] | None) -> str:
    lines = [f"roofline estimate on {gpu.upper()} (bf16, fwd+bwd per micro-batch, eager kernels, no optimizer)"]
    for key, entry in res.items():
        variants = list(entry["layer"])
        lines.append(f"\n{key} tokens: " + " | ".join(f"{v}" for v in variants) + "  (GFLOP / MB / launches / µs)")
        for part, row in entry.items():
            cells = [f"{r['gflop']:8.1f} {r['mb']:8.0f} {r['launches']:4d} {r['us']:8.0f}" for r in row.values()]
            lines.append(f"  {part:<6} " + " | ".join(cells))
        lay = entry["layer"]
        tags = {"": ("", "plain"), "-weight": ("[weight-side, before]", "plain"),
                "-fused": ("[elementwise fused: bound, not run]", "plain-fused")}
        for kind in ("it", "cpt"):
            for impl, (tag, base) in tags.items():
                v = kind + impl
                if v in lay and base in lay:
                    lines.append(f"gpu_estimate[{key},{kind}{tag}]={lay[v]['us'] / lay[base]['us']:.4f}")
    if cpu:
        r = cpu["ratios"]
        lines.append(f"\nCPU proxy (measured, tinyllama-1.1b layer, {cpu['tokens']} tokens): "
                     f"CPT/vanilla {r['cpt'][0]:.3f}x, IT/full {r['it'][0]:.3f}x, IT/s2 {r['it_vs_s2'][0]:.3f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    p.add_argument("--cpu-json", default=None, help="a `bench_overhead.py --shape 1b-layer --json` result")
    p.add_argument("--no-before", action="store_true", help="skip the weight-side (pre-issue-13) variants")
    p.add_argument("--no-fused", action="store_true", help="skip the fused-elementwise bound")
    p.add_argument("--ops", default=None, metavar="MODEL,TOKENS,VARIANT,PART",
                   help="only list the ops of one part, e.g. llama2-7b,4096,cpt-fused,gate")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.ops:
        model_name, tokens, variant, part = a.ops.split(",")
        ops = count_layer(model_name, int(tokens), variant)[part]
        for name, f, b in ops:
            print(f"{name[:70]:<70} {f / 1e9:9.2f} GFLOP {b / 2**20:8.1f} MB {1e6 * roofline_s([(name, f, b)], a.gpu):7.1f} µs")
        print(f"total {1e6 * roofline_s(ops, a.gpu):.1f} µs over {len(ops)} kernels")
        return 0
    cases = [("llama2-7b", 4096), ("llama2-7b", 16384), ("tinyllama-1.1b", 4096), ("tinyllama-1.1b", 16384),
             ("tinyllama-1.1b", 1024)]
    variants = ("plain", "it", "cpt") + (() if a.no_before else ("it-weight", "cpt-weight"))
    variants += () if a.no_fused else ("plain-fused", "it-fused", "cpt-fused")
    res = run(cases, a.gpu, variants)
    cpu = json.loads(Path(a.cpu_json).read_text()) if a.cpu_json else None
    print(format_cost(res, a.gpu, cpu))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
