"""One decoder layer shaped like TinyLlama-1.1B: APEX's operator cost against the plain layer.

    python benchmarks/bench_overhead.py --shape 1b-layer --threads 1 [--rounds 5] [--tokens 1024]

Layer: hidden 2048, 32 q / 4 kv heads, ffn 5632, one sequence of 1024 tokens, fp32 on CPU. Each variant is
the same seeded layer, prepared through the public `Apex` API (random scores, `expand`), and timed on
forward + backward (input gradient included, as for a middle layer) + AdamW step of its trainable params:

    full     plain layer, everything trains (vanilla for CPT, full fine-tuning for IT)
    frozen   plain layer, nothing trains (only the input gradient): the floor of an IT layer
    s2       APEX IT with operator none (s2 deltas only)
    apex_it  APEX IT (configs/method/apex.yaml defaults)
    apex_cpt APEX CPT (configs/experiment/apex_cpt.yaml: base trains, k 0.125, no s2)

Variants are interleaved (order reversed every round) for `--rounds` rounds after one warm-up step each;
each ratio is the median over rounds of the per-round ratio of process CPU time (with one thread the work
done, far less disturbed by other processes than wall time, which is printed beside it), with its
min–max spread. Extra saved
activations: bytes autograd saves for backward (non-parameter storages, counted once) minus the plain
layer's. Prints `operator_overhead[cpt]=` (APEX CPT / full) and `operator_overhead[it]=` (APEX IT / full).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from apexlm.apex import Apex, ApexConfig

VARIANTS = ("full", "frozen", "s2", "apex_it", "apex_cpt")
HIDDEN, HEADS, KV, FFN = 2048, 32, 4, 5632


def apex_config(variant: str) -> ApexConfig | None:
    """The ApexConfig of a variant (None for the plain layer)."""
    if variant == "apex_it":
        return ApexConfig()
    if variant == "s2":
        return ApexConfig(operator="none")
    if variant == "apex_cpt":
        return ApexConfig(k_ratio=0.125, tuned_attn_ratio=None, tuned_ffn_ratio=None, base_trainable=True,
                          finetune_qk=False)
    return None


class LayerRunner:
    """One variant: a 1-layer LLaMA (tiny vocab) whose decoder layer alone is timed."""

    def __init__(self, variant: str, tokens: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=32, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
                          num_key_value_heads=KV, intermediate_size=FFN, max_position_embeddings=tokens,
                          use_cache=False, attention_dropout=0.0)
        self.model = LlamaForCausalLM(cfg).float().train()
        self.name = variant
        acfg = apex_config(variant)
        if acfg is not None:
            apex = Apex(self.model, acfg)
            g = torch.Generator().manual_seed(seed + 7)
            scores = {"attn": [torch.rand(KV, generator=g)], "ffn": [torch.rand(FFN, generator=g)]}
            apex.expand(scores)
            apex.close()                                  # no score hooks: the layer's operators alone
        self.layer = self.model.model.layers[0]
        if variant == "full":
            self.layer.requires_grad_(True)
        elif variant == "frozen":
            self.layer.requires_grad_(False)
        params = [p for p in self.layer.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0) if params else None
        g = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(1, tokens, HIDDEN, generator=g).requires_grad_(True)        # (1, T, hidden)
        pos = torch.arange(tokens)[None]
        with torch.no_grad():
            self.pe = self.model.model.rotary_emb(self.x, pos)
        self.pos = pos
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def forward(self) -> torch.Tensor:
        out = self.layer(self.x, attention_mask=None, position_ids=self.pos, position_embeddings=self.pe)
        out = out[0] if isinstance(out, tuple) else out                                  # (1, T, hidden)
        return out.square().mean()

    def step(self) -> None:
        self.forward().backward()
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.x.grad = None

    def timed_step(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        self.step()
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - c0)

    def saved_bytes(self) -> int:
        """Bytes of the non-parameter tensors autograd saves in one forward (each storage once)."""
        own = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in own and t.device.type != "meta":
                seen[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.forward()
        del loss
        self.x.grad = None
        return sum(seen.values())


def _ratio_stats(num: list[float], den: list[float]) -> tuple[float, float, float]:
    per = [a / b for a, b in zip(num, den, strict=True)]
    return statistics.median(per), min(per), max(per)


def run_layer_bench(rounds: int = 5, tokens: int = 1024, log=print) -> dict[str, Any]:
    """Build every variant, warm up, time interleaved rounds; returns medians, ratios and saved bytes."""
    runners = {}
    for v in VARIANTS:
        log(f"[1b-layer] build {v} + warm-up step")
        r = LayerRunner(v, tokens)
        r.step()
        runners[v] = r
    saved = {v: r.saved_bytes() for v, r in runners.items()}
    order = list(runners.values())
    for i in range(rounds):
        log(f"[1b-layer] round {i + 1}/{rounds}")
        for r in order if i % 2 == 0 else order[::-1]:
            r.timed_step()
    t = {v: r.cpu_times for v, r in runners.items()}
    wall = {v: r.times for v, r in runners.items()}
    res: dict[str, Any] = {"tokens": tokens, "rounds": rounds, "clock": "process CPU time",
                           "step_s": {v: statistics.median(x) for v, x in t.items()}, "step_s_all": t,
                           "wall_s": {v: statistics.median(x) for v, x in wall.items()}, "wall_s_all": wall,
                           "saved_mb": {v: b / 2**20 for v, b in saved.items()},
                           "trainable": {v: r.trainable for v, r in runners.items()}}
    pairs = {"cpt": ("apex_cpt", "full"), "it": ("apex_it", "full"), "it_vs_s2": ("apex_it", "s2"),
             "frozen": ("frozen", "full"), "s2": ("s2", "full")}
    res["ratios"] = {k: _ratio_stats(t[a], t[b]) for k, (a, b) in pairs.items()}
    res["wall_ratios"] = {k: _ratio_stats(wall[a], wall[b]) for k, (a, b) in pairs.items()}
    plain = saved["full"]
    res["extra_saved"] = {v: (saved[v] - plain) / plain for v in ("apex_it", "apex_cpt", "s2")}
    return res


def format_layer(res: dict[str, Any]) -> str:
    """The table and the `operator_overhead[...]=` lines."""
    lines = [f"one TinyLlama-1.1B-shaped decoder layer, {res['tokens']} tokens, fwd+bwd+AdamW, fp32, "
             f"{torch.get_num_threads()} thread(s), {res['rounds']} interleaved rounds; ratios of process CPU "
             "time (1 thread: the work done; wall time, which other processes' load distorts, beside it)",
             f"{'variant':<10} {'trainable':>11} {'cpu ms':>9} {'min':>8} {'max':>8} {'wall ms':>9} "
             f"{'saved MB':>9}"]
    for v in VARIANTS:
        xs = res["step_s_all"][v]
        lines.append(f"{v:<10} {res['trainable'][v] / 1e6:10.2f}M {1e3 * res['step_s'][v]:9.1f} "
                     f"{1e3 * min(xs):8.1f} {1e3 * max(xs):8.1f} {1e3 * res['wall_s'][v]:9.1f} "
                     f"{res['saved_mb'][v]:9.1f}")
    names = {"cpt": "APEX CPT / vanilla", "it": "APEX IT / full FT", "it_vs_s2": "APEX IT / s2-only",
             "s2": "s2-only / full FT", "frozen": "frozen plain / full FT"}
    for key, label in names.items():
        med, lo, hi = res["ratios"][key]
        wmed, wlo, whi = res["wall_ratios"][key]
        lines.append(f"{label:<24} {med:.3f}x  (per-round min {lo:.3f}, max {hi:.3f}; wall {wmed:.3f}x, "
                     f"{wlo:.3f}–{whi:.3f})")
    for v, frac in res["extra_saved"].items():
        lines.append(f"extra saved activations {v}: {100 * frac:+.1f} % of the plain layer's")
    lines.append(f"operator_overhead[cpt]={res['ratios']['cpt'][0]:.4f}")
    lines.append(f"operator_overhead[it]={res['ratios']['it'][0]:.4f}")
    lines.append(f"operator_overhead[it_vs_s2]={res['ratios']['it_vs_s2'][0]:.4f}")
    return "\n".join(lines)
