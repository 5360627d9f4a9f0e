"""Step time and peak memory of APEX against full fine-tuning, LoRA and S2, on one model and one set of batches.

    python benchmarks/bench_overhead.py --quick                  # CPU, tiny 5M LLaMA, < 2 min on 2 cores
    python benchmarks/bench_overhead.py --shape 1b --device cuda --steps 10 --json out.json
    python benchmarks/bench_overhead.py --shape 1b-layer --threads 1   # one 1.1B-shaped layer (layer_bench.py)

Every method starts from the same seeded initialisation and trains on the same batches with AdamW
(forward + backward + step, fp32 on CPU, bf16 autocast on CUDA); the median of the timed steps after a
warmup is compared with full fine-tuning measured in the same run. Methods are interleaved step by step
(except at the 1b shape, where they run one after another to bound memory), so background load hits all
of them alike; a second, identical full fine-tuning run (the A/A row) shows the noise of the measurement. Also measured: the scoring hooks alone (recorders on vs off, forward + backward of the plain
model), the stage transition (`Apex.restage`) and inference of the fused model vs the original one.
On CPU the table also gives the ratio of process CPU time per step ("cpu x full"), which a busy machine
disturbs much less than wall time. Use --threads 1 on a busy machine: with several OpenMP threads every
small parallel op waits for a preempted worker (measured here: one Apex.restage 2.7 s with 2 threads under
load vs 30 ms with 1), which inflates APEX's many small ops far more than full fine-tuning's large ones.
The last line is `apex_overhead_ratio=<APEX IT step time / full step time>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    SHAPES,
    PeakMemory,
    build_model,
    experiment_method,
    machine_info,
    machine_line,
    median,
    method_config,
    random_batches,
    shape_dict,
    sync,
    timed_both,
    train_step,
)
from overhead_extras import fused_inference, hook_cost, profile_step, restage_cost  # noqa: E402

from apexlm.methods import build_method  # noqa: E402
from apexlm.methods.base import count_params  # noqa: E402

METHODS = ("full", "apex_it", "apex_cpt", "s2", "lora", "full_aa")
DESCRIPTIONS = {
    "full": "full fine-tuning",
    "full_aa": "full fine-tuning, A/A noise control",
    "apex_it": "APEX IT (configs/method/apex.yaml)",
    "apex_cpt": "APEX CPT (base_trainable, k 0.125)",
    "s2": "S2 = APEX IT, operator none",
    "lora": "LoRA r=16 (configs/method/lora.yaml)",
}
LR = 1e-4


def method_configs(assess_samples: int) -> dict[str, dict[str, Any]]:
    """The five method configs, read from configs/ so the benchmark follows the official knobs."""
    it = method_config("apex", assess_samples=assess_samples)
    return {
        "full": method_config("full"),
        "apex_it": it,
        "apex_cpt": {**it, **experiment_method("apex_cpt")},
        "s2": {**it, **method_config("s2")},
        "lora": method_config("lora"),
        "full_aa": method_config("full"),
    }


@dataclass
class Runner:
    """One method's model, optimizer and measurements."""

    name: str
    model: torch.nn.Module
    method: Any
    opt: torch.optim.Optimizer
    setup_s: float
    trainable: int
    peak_mb: float | None = None
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)

    def step(self, batch: dict, device: torch.device) -> None:
        train_step(self.model, batch, self.opt, device)

    def timed_step(self, batch: dict, device: torch.device) -> None:
        wall, cpu = timed_both(lambda: self.step(batch, device), device)
        self.times.append(wall)
        self.cpu_times.append(cpu)

    def release(self) -> None:
        """Drop optimizer state and gradients (keeps the weights for the later measurements)."""
        self.opt.state.clear()
        self.model.zero_grad(set_to_none=True)


def build_runner(name: str, cfg: dict[str, Any], shape_name: str, device: torch.device, batches: list[dict],
                 warmup: int, seed: int, compile_backend: str | None = None) -> Runner:
    """Build + prepare (+ compile) + optimizer + warmup steps; peak memory is measured over all of it.

    With `compile_backend` the prepared model is compiled in place (`nn.Module.compile`, as
    `trainer.compile` does; APEX's expanded linears then run `forward_traceable`); the warmup steps pay
    the compilation, the timed steps run the compiled graph."""
    mem = PeakMemory(device)
    mem.start()
    t0 = time.perf_counter()
    model = build_model(SHAPES[shape_name], device, seed)
    method = build_method(cfg, seed=seed)
    model = method.prepare(model, assess_batches=batches)
    if compile_backend:
        model.compile(backend=compile_backend)
    sync(device)
    setup_s = time.perf_counter() - t0
    opt = torch.optim.AdamW(method.param_groups(model, LR, 0.0), lr=LR, betas=(0.9, 0.95), eps=1e-8)
    runner = Runner(name, model, method, opt, setup_s, count_params(model)[0])
    for i in range(warmup):
        runner.step(batches[i % len(batches)], device)
    runner.peak_mb = mem.peak_mb()
    return runner


def run_overhead(shape_name: str, device: torch.device, steps: int, warmup: int, seed: int = 0,
                 interleave: bool | None = None, methods: tuple[str, ...] = METHODS,
                 log=print, compile_backend: str | None = None) -> dict[str, Any]:
    """Measure everything for one shape; returns the JSON-able result (see `format_table`).

    Compiled (`compile_backend`): the step table only; the stage-transition, hook and fused-inference
    extras need the eager model (they change what a compiled graph guards on)."""
    shape = SHAPES[shape_name]
    interleave = shape_name != "1b" if interleave is None else interleave
    batches = random_batches(max(2, min(steps + warmup, 8)), shape, device, seed=seed + 1)
    cfgs = method_configs(shape.batch)
    base_total = count_params(build_model(shape, torch.device("meta"), seed))[1]
    prime = build_model(shape, device, seed)                # one-time costs (allocator, kernels) go here,
    prime_opt = torch.optim.AdamW(prime.parameters(), lr=LR)  # not into the first method's numbers
    train_step(prime, batches[0], prime_opt, device)
    del prime, prime_opt
    runners: dict[str, Runner] = {}
    for name in ("full", *[m for m in methods if m != "full"]):
        log(f"[overhead {shape_name}] {name}: build + {warmup} warmup steps")
        r = build_runner(name, cfgs[name], shape_name, device, batches, warmup, seed, compile_backend)
        runners[name] = r
        if not interleave:                                  # 1b: free optimizer state before the next one
            for i in range(steps):
                r.timed_step(batches[(warmup + i) % len(batches)], device)
            r.release()
    if interleave:
        for i in range(steps):
            order = list(runners.values())
            for r in order if i % 2 == 0 else order[::-1]:
                r.timed_step(batches[(warmup + i) % len(batches)], device)
    out: dict[str, Any] = {"machine": machine_info(device), "shape": shape_dict(shape_name, shape),
                           "steps": steps, "warmup": warmup, "interleaved": interleave,
                           "compile": compile_backend,
                           "base_params": base_total, "methods": {}}
    full_s, full_mem = median(runners["full"].times), runners["full"].peak_mb
    full_cpu = median(runners["full"].cpu_times)
    for name, r in runners.items():
        s = median(r.times)
        out["methods"][name] = {
            "description": DESCRIPTIONS[name], "step_s": s, "step_ratio": s / full_s,
            "step_s_all": r.times, "cpu_s": median(r.cpu_times), "cpu_ratio": median(r.cpu_times) / full_cpu,
            "cpu_s_all": r.cpu_times, "peak_mem_mb": r.peak_mb,
            "mem_ratio": (r.peak_mb / full_mem) if r.peak_mb and full_mem else None,
            "trainable_params": r.trainable, "trainable_fraction": r.trainable / base_total,
            "setup_s": r.setup_s, "tokens_per_s": shape.batch * shape.seq / s}
    if compile_backend:
        if "apex_it" in runners:
            out["apex_overhead_ratio"] = out["methods"]["apex_it"]["step_ratio"]
        return out
    if "apex_it" in runners:
        log(f"[overhead {shape_name}] stage transitions")
        out["restage"] = {n: restage_cost(runners[n], batches, device) for n in ("apex_it", "apex_cpt")
                          if n in runners}
    for r in runners.values():
        r.release()
    log(f"[overhead {shape_name}] scoring hooks on/off")
    out["hooks"] = hook_cost(runners["full"].model, batches, device, max(3, steps))
    if "apex_it" in runners:
        log(f"[overhead {shape_name}] fused vs original inference")
        out["fused"] = fused_inference(runners["apex_it"], runners["full"].model, batches, device, max(3, steps))
    if "apex_it" in runners:
        out["apex_overhead_ratio"] = out["methods"]["apex_it"]["step_ratio"]
    return out


def _mb(x: float | None) -> str:
    return "   n/a" if x is None else f"{x:8.1f}"


def format_table(res: dict[str, Any]) -> str:
    """The human-readable table of one `run_overhead` result."""
    s = res["shape"]
    lines = [machine_line(res["machine"]),
             f"shape {s['name']}: hidden {s['hidden']}, {s['layers']} layers, {s['heads']}/{s['kv_heads']} heads, "
             f"ffn {s['ffn']}, vocab {s['vocab']}, {res['base_params'] / 1e6:.1f}M params; batch "
             f"{s['batch']}x{s['seq']}; {res['warmup']} warmup + {res['steps']} timed steps"
             f"{', interleaved' if res['interleaved'] else ', sequential'}"
             f"{', compiled (' + res['compile'] + ')' if res.get('compile') else ', eager'}",
             f"{'method':<40} {'trainable':>15} {'step ms':>9} {'x full':>7} {'cpu x full':>10} {'peak MB':>8} "
             f"{'x full':>7} {'setup s':>8}"]
    for m in res["methods"].values():
        mr = "    n/a" if m["mem_ratio"] is None else f"{m['mem_ratio']:7.3f}"
        cpu = f"{m['cpu_ratio']:10.3f}" if res["machine"]["device"] == "cpu" else f"{'-':>10}"
        lines.append(f"{m['description']:<40} {m['trainable_params'] / 1e6:8.2f}M {100 * m['trainable_fraction']:5.1f}%"
                     f" {1e3 * m['step_s']:9.1f} {m['step_ratio']:7.3f} {cpu} {_mb(m['peak_mem_mb'])} {mr} "
                     f"{m['setup_s']:8.2f}")
    h = res.get("hooks")
    if h:
        lines.append(f"scoring hooks alone (fwd+bwd, plain model): on {1e3 * h['on_s']:.1f} ms / off "
                     f"{1e3 * h['off_s']:.1f} ms = {h['ratio']:.3f}"
                     + (f" (cpu time {h['cpu_ratio']:.3f})" if res["machine"]["device"] == "cpu" else ""))
    full_s = res["methods"]["full"]["step_s"]
    for name, r in res.get("restage", {}).items():
        lines.append(f"stage transition apex.restage ({name}): median {1e3 * r['median_s']:.1f} ms "
                     f"= {r['median_s'] / full_s:.2f} full steps (first {1e3 * r['times_s'][0]:.1f} ms)")
    if "fused" in res:
        f = res["fused"]
        lines.append(f"fused inference (fwd, no grad): fused {1e3 * f['fused_s']:.1f} ms / original "
                     f"{1e3 * f['original_s']:.1f} ms = {f['ratio']:.3f}; fuse {1e3 * f['fuse_s']:.1f} ms, "
                     f"max |dlogits| vs wrapped {f['max_abs_diff']:.2e}, wrappers left {f['wrappers_left']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU, tiny shape, 5 timed steps (< 2 min on 2 cores)")
    p.add_argument("--shape", choices=sorted(SHAPES) + ["1b-layer"], default=None)
    p.add_argument("--rounds", type=int, default=5, help="1b-layer: interleaved rounds (>= 4)")
    p.add_argument("--tokens", type=int, default=1024, help="1b-layer: tokens of the one sequence")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per method (default 5 quick, 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma list; full is always included; full_aa is the A/A noise control")
    p.add_argument("--sequential", action="store_true", help="one method after another (default at 1b)")
    p.add_argument("--profile", action="store_true", help="also print the top ops of one full / APEX IT step")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="compile every prepared model (default backend inductor), as trainer.compile does")
    p.add_argument("--json", default=None, help="write the result here")
    a = p.parse_args(argv)
    shape = a.shape or "tiny"
    dev = a.device or ("cpu" if a.quick or not torch.cuda.is_available() else "cuda")
    steps = a.steps or (5 if a.quick else 10)
    if a.threads:
        torch.set_num_threads(a.threads)
    if shape == "1b-layer":
        return _layer_main(a)
    device = torch.device(dev)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    res = run_overhead(shape, device, steps, a.warmup, a.seed, False if a.sequential else None, methods, log,
                       a.compile)
    res["wall_s"] = time.perf_counter() - t0
    print(format_table(res))
    if a.profile:
        batches = random_batches(2, SHAPES[shape], device, seed=a.seed + 1)
        for name in ("full", "apex_it"):
            r = build_runner(name, method_configs(SHAPES[shape].batch)[name], shape, device, batches, 1, a.seed)
            print(f"\n--- top ops (self time), one {name} step ---\n{profile_step(r, batches[0], device)}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.1f} s")
    if "apex_overhead_ratio" in res:
        print(f"apex_overhead_ratio={res['apex_overhead_ratio']:.4f}")
    return 0


def _layer_main(a: argparse.Namespace) -> int:
    """--shape 1b-layer: the operator-cost proxy of layer_bench.py (CPU, fp32)."""
    from layer_bench import format_layer, run_layer_bench

    res = run_layer_bench(a.rounds, a.tokens, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_layer(res))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
