"""Memory plan vs measured peak: `apexlm.methods.memory_plan` against a few real training steps.

    python benchmarks/bench_memory.py                        # CPU: tiny and base100m (~91M), full and apex
    python benchmarks/bench_memory.py --device cuda          # GPU: bf16 autocast, torch.cuda.max_memory_allocated
    python benchmarks/bench_memory.py --shapes tiny --methods full --checkpointing

Each (shape, method) runs in a fresh subprocess that (1) plans the run on the meta device with the same method
config and (2) builds the model, prepares the method, and runs `--steps` optimizer steps (forward, backward,
AdamW step, zero_grad(set_to_none); the loss of `CausalLMModule`), recording the peak of allocated memory:
- CPU: the profiler's allocator events (`profile_memory=True`): every allocation and free of the CPU allocator
  with its byte count; the peak is the maximum of their running sum, counted from an empty process (model,
  optimizer state and activations included). This is the allocator-level figure, like CUDA's below; RSS would
  add the allocator's cached pages and the Python/library footprint, which the plan does not model.
- CUDA: torch.cuda.max_memory_allocated over the same steps, from a fresh process.
Prints one line per run and `mem_ratio[<shape>/<method>]=<plan / measured>` (goal: within 0.85..1.15).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from bench_common import SHAPES, build_model, method_config, random_batches, train_step  # noqa: E402

from apexlm.methods import build_method  # noqa: E402
from apexlm.methods.memory_plan import GB, Setup, plan  # noqa: E402

# Per-shape micro-batch x sequence for the CPU check (small enough for a few steps on a shared CPU).
CPU_BATCH = {"micro": (2, 64), "tiny": (8, 256), "base100m": (2, 256), "125m": (1, 256)}


def prepared(shape_name: str, method: str, device: torch.device, checkpointing: bool
             ) -> tuple[torch.nn.Module, Any]:
    """The bench model of `shape_name` on `device` (meta for the plan) prepared by `method` (no assessment),
    and the method object (its optimizer groups)."""
    model = build_model(SHAPES[shape_name], device)
    if checkpointing:
        model.gradient_checkpointing_enable()
    m = build_method(method_config(method), seed=0)
    return m.prepare(model, assess_batches=None), m


def cpu_peak_bytes(events: Any) -> int:
    """Peak of the running sum of the CPU allocator's [memory] events (bytes), in time order."""
    mem = sorted((e.start_ns(), e.nbytes()) for e in events
                 if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    cur = peak = 0
    for _, nbytes in mem:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def measure(shape_name: str, method: str, device: torch.device, steps: int, batch: int, seq: int,
            checkpointing: bool) -> int:
    """Peak allocated bytes of building + `steps` training steps (fresh process assumed)."""
    from dataclasses import replace

    shape = replace(SHAPES[shape_name], batch=batch, seq=seq)
    batches = random_batches(steps, shape, torch.device("cpu"))

    def work() -> None:
        model, m = prepared(shape_name, method, device, checkpointing)
        model.train()
        params = m.param_groups(model, 1e-4, 0.0)
        opt = torch.optim.AdamW(params, lr=1e-4)
        for b in batches:
            train_step(model, {k: v.to(device) for k, v in b.items()}, opt, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        work()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    return cpu_peak_bytes(prof.profiler.kineto_results.events())


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    device = torch.device(args.device)
    batch, seq = (args.batch, args.seq) if args.batch else CPU_BATCH[args.shapes]
    setup = Setup(strategy="single", devices=1, seq=seq, micro_batch=batch,
                  accelerator="gpu" if device.type == "cuda" else "cpu",
                  precision="bf16-mixed" if device.type == "cuda" else "32-true", checkpointing=args.checkpointing)
    meta, _ = prepared(args.shapes, args.methods, torch.device("meta"), args.checkpointing)
    planned = plan(meta, meta.config, setup)
    measured = measure(args.shapes, args.methods, device, args.steps, batch, seq, args.checkpointing)
    print(json.dumps({"shape": args.shapes, "method": args.methods, "batch": batch, "seq": seq,
                      "checkpointing": args.checkpointing, "device": device.type,
                      "plan_gb": planned["per_device"] / GB, "measured_gb": measured / GB,
                      "parts_gb": {k: planned[k] / GB for k in ("weights", "gradients", "optimizer",
                                                                "activations")}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,base100m")
    ap.add_argument("--methods", default="full,apex")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="micro-batch (default: per shape, CPU_BATCH)")
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    rows = []
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--child", "--shapes", shape, "--methods", method, "--device",
                   args.device, "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
            env = dict(os.environ, OMP_NUM_THREADS="1",
                       PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
            proc = subprocess.run(cmd + (["--checkpointing"] if args.checkpointing else []),
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"{shape}/{method} failed:\n{proc.stderr[-2000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            ratio = row["plan_gb"] / row["measured_gb"]
            print(f"{shape:<9}{method:<6}B={row['batch']} T={row['seq']} ckpt={int(args.checkpointing)} "
                  f"{row['device']}: plan {row['plan_gb']:.3f} GB  measured {row['measured_gb']:.3f} GB  "
                  f"parts {json.dumps({k: round(v, 3) for k, v in row['parts_gb'].items()})}", flush=True)
            print(f"mem_ratio[{shape}/{method}]={ratio:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
