"""Tokens/s of the Lightning pipeline (CausalLMModule + Trainer) against a plain PyTorch loop.

    python benchmarks/bench_pipeline.py                       # CPU, tiny model, Shakespeare blocks
    python benchmarks/bench_pipeline.py --device cuda --shape 125m --steps 60

Both sides: the same seeded model initialisation, the same method (param groups), the same batches in the
same order (one seeded DataLoader), AdamW with the same betas/eps, the same warmup + cosine `lr_factor`
schedule, gradient clipping at 1.0, the same precision (fp32 on CPU, bf16 autocast on CUDA). The Lightning
side runs what `apexlm.training.run` runs, minus logger, progress bar and checkpoints (stage and throughput
callbacks included). Throughput is measured after `--warmup` steps; each side runs `--repeats` times,
interleaved (L P L P), and the medians are compared; the ratio of median per-step times (each step timed
end to end, data fetch and callbacks included) is printed too, as it is robust to stalls on a busy machine. The per-step losses of both sides are compared too:
they should agree, which shows that the two loops compute the same thing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from bench_common import (  # noqa: E402
    SHAPES,
    build_model,
    machine_info,
    machine_line,
    median,
    method_config,
    random_batches,
    sync,
    train_step,
)
from torch.utils.data import DataLoader  # noqa: E402

from apexlm.callbacks.stage_boundary import StageBoundaryCallback  # noqa: E402
from apexlm.callbacks.throughput import ThroughputCallback  # noqa: E402
from apexlm.methods import build_method  # noqa: E402
from apexlm.methods.schedule import lr_factor  # noqa: E402
from apexlm.models.module import CausalLMModule  # noqa: E402

OPTIM = {"lr": 3e-4, "weight_decay": 0.0, "betas": (0.9, 0.95), "eps": 1e-8, "warmup_ratio": 0.03,
         "restart_warmup_ratio": 0.005, "schedule": "cosine"}
CLIP = 1.0


def make_loader(kind: str, shape_name: str, seed: int, data_dir: str | None) -> tuple[Any, int]:
    """(factory of a fresh seeded DataLoader, vocab). 'shakespeare' uses the project datamodule."""
    shape = SHAPES[shape_name]
    if kind == "synthetic":
        data = [{k: v[i] for k, v in b.items()} for b in random_batches(64, shape, torch.device("cpu"), seed)
                for i in range(shape.batch)]
        return (lambda: DataLoader(data, batch_size=shape.batch, shuffle=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(seed))), shape.vocab
    from apexlm.data.datamodule import build_datamodule
    from apexlm.data.paths import resolve_data_dir, tokenizer_dir
    from apexlm.data.tokenizer import load_tokenizer

    root = resolve_data_dir(data_dir)
    tok = load_tokenizer(tokenizer_dir(root))
    dm = build_datamodule({"kind": "pretrain_text", "domain": kind, "path": str(root), "block_size": shape.seq,
                           "batch_size": shape.batch, "eval_batch_size": shape.batch}, tok, seed)
    return dm.train_dataloader, max(len(tok), shape.vocab)


class _StepTimer(L.Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch; per-step end times; losses."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0 = self.t1 = 0.0
        self.losses: list[torch.Tensor] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach())
        sync(self.device)
        self.ends.append(time.perf_counter())
        if trainer.global_step == self.steps:
            self.t1 = self.ends[-1]


def _method_and_model(a: argparse.Namespace, vocab: int, device: torch.device):
    method = build_method(method_config(a.method, assess_samples=0), seed=a.seed)
    model = method.prepare(build_model(SHAPES[a.shape], device, a.seed, vocab))
    return method, model


def run_lightning(a: argparse.Namespace, loader_fn, vocab: int, device: torch.device) -> dict[str, Any]:
    method, model = _method_and_model(a, vocab, device)
    module = CausalLMModule(model, method, OPTIM, a.steps)
    timer = _StepTimer(a.warmup, a.steps, device)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if device.type == "cuda" else "32-true", max_steps=a.steps,
                        max_epochs=-1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        gradient_clip_val=CLIP, callbacks=[StageBoundaryCallback(), ThroughputCallback(), timer])
    trainer.fit(module, train_dataloaders=loader_fn())
    return {"seconds": timer.t1 - timer.t0, "losses": [float(x) for x in timer.losses],
            "step_s": _intervals(timer.ends, a.warmup)}


def _intervals(ends: list[float], warmup: int) -> list[float]:
    """End-to-end time of each timed step (data fetch, logging and callbacks included)."""
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:], strict=False)] if warmup >= 1 else []


def run_plain(a: argparse.Namespace, loader_fn, vocab: int, device: torch.device) -> dict[str, Any]:
    method, model = _method_and_model(a, vocab, device)
    groups = method.param_groups(model, OPTIM["lr"], OPTIM["weight_decay"])
    opt = torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=OPTIM["betas"], eps=OPTIM["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(
        lr_factor, total_steps=a.steps, warmup_ratio=OPTIM["warmup_ratio"], boundaries=[],
        policy=method.stage_lr, restart_warmup_ratio=OPTIM["restart_warmup_ratio"], schedule="cosine"))
    model.train()
    losses, ends, t0, step = [], [], 0.0, 0
    while step < a.steps:
        for batch in loader_fn():
            if step == a.warmup:
                sync(device)
                t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            losses.append(train_step(model, batch, opt, device, clip=CLIP))
            sched.step()
            sync(device)
            ends.append(time.perf_counter())
            step += 1
            if step == a.steps:
                break
    return {"seconds": ends[-1] - t0, "losses": [float(x) for x in losses], "step_s": _intervals(ends, a.warmup)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--data", choices=("shakespeare", "pycode", "synthetic"), default="shakespeare")
    p.add_argument("--data-dir", default=None, help="prepared data dir (default: $APEXLM_DATA_DIR or ./data)")
    p.add_argument("--method", default="full", help="a configs/method name (full, lora, apex, ...)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    loader_fn, vocab = make_loader(a.data, a.shape, a.seed, a.data_dir)
    tokens = (a.steps - a.warmup) * SHAPES[a.shape].batch * SHAPES[a.shape].seq
    runs: dict[str, list[dict[str, Any]]] = {"lightning": [], "plain": []}
    for r in range(a.repeats):
        for name, fn in (("lightning", run_lightning), ("plain", run_plain)):
            res = fn(a, loader_fn, vocab, device)
            res["tokens_per_s"] = tokens / res["seconds"]
            runs[name].append(res)
            print(f"[pipeline] repeat {r + 1} {name}: {res['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    tps = {k: median([x["tokens_per_s"] for x in v]) for k, v in runs.items()}
    per_step = {k: median([t for x in v for t in x["step_s"]]) for k, v in runs.items()}
    diff = max(abs(x - y) for x, y in zip(runs["lightning"][0]["losses"], runs["plain"][0]["losses"], strict=True))
    out = {"machine": machine_info(device), "shape": a.shape, "method": a.method, "data": a.data,
           "steps": a.steps, "warmup": a.warmup, "repeats": a.repeats, "tokens_timed": tokens,
           "tokens_per_s": tps, "ratio": tps["lightning"] / tps["plain"], "max_abs_loss_diff": diff,
           "median_step_s": per_step, "median_step_ratio": per_step["plain"] / per_step["lightning"],
           "runs": {k: [{"tokens_per_s": x["tokens_per_s"], "seconds": x["seconds"]} for x in v]
                    for k, v in runs.items()}}
    s = SHAPES[a.shape]
    print(machine_line(out["machine"]))
    print(f"shape {a.shape} (batch {s.batch}x{s.seq}), method {a.method}, data {a.data}; {a.steps} steps, "
          f"{a.warmup} untimed; {a.repeats} repeats interleaved")
    print(f"{'loop':<12} {'tok/s (median of repeats)':>26}   {'per repeat':<18} {'median step ms':>14}")
    for k in ("lightning", "plain"):
        each = ", ".join(f"{x['tokens_per_s']:.0f}" for x in runs[k])
        print(f"{k:<12} {tps[k]:>26.0f}   {each:<18} {1e3 * per_step[k]:>14.1f}")
    print(f"ratio lightning/plain = {out['ratio']:.3f} (target >= 0.95); from median step times "
          f"{out['median_step_ratio']:.3f}; max |loss diff| per step = {diff:.2e}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"pipeline_ratio={out['ratio']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
