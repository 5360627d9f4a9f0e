"""Plain-torch pre-training and continued pre-training (CPT) loops used by gpu_check.py.

No Hydra, no Lightning: the GPU image lacks hydra-core/omegaconf. The loops reproduce what the pipeline
does for a text run: token-mean loss (`token_loss_sum`), the method's param groups, AdamW (0.9, 0.95),
the stage-aware `lr_factor` schedule, clipping at 1.0, and at each stage boundary
`method.end_stage(model, opt)` (the transition, then the optimizer reset the method's policy asks for: the
call `StageBoundaryCallback` makes). Validation perplexity is token-weighted over the whole val split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import (
    Shape,
    block_batches,
    build_model,
    experiment_method,
    make_batch,
    median,
    method_config,
    sync,
    train_step,
)

from apexlm.methods import build_method
from apexlm.methods.base import count_params, decay_groups
from apexlm.methods.schedule import lr_factor
from apexlm.models.module import token_loss_sum

Log = Callable[[str], None]


def load_tokens(data_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays written by pack_gpu_data.py, or None when the folder is missing."""
    import json

    if not (data_dir / "meta.json").is_file():
        return None
    meta = json.loads((data_dir / "meta.json").read_text())
    arrays = {k: np.load(data_dir / f"{k}.npy") for k in meta["tokens"]}
    return arrays, meta


def synthetic_tokens(vocab: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Stand-in streams (random tokens) when no packed data was carried: checks the code, not the method."""
    g = np.random.default_rng(seed)
    return {f"{d}_{s}": g.integers(0, vocab, n if s == "train" else n // 10).astype(np.uint16)
            for d in ("shakespeare", "pycode") for s in ("train", "val")}


@torch.no_grad()
def val_ppl(model: torch.nn.Module, tokens: np.ndarray, shape: Shape, device: torch.device,
            max_batches: int | None = None) -> float:
    """Perplexity over the val stream cut into (seq,) blocks, in order, token-weighted."""
    was = model.training
    model.eval()
    blocks = torch.from_numpy(tokens[: len(tokens) // shape.seq * shape.seq].astype(np.int64)).view(-1, shape.seq)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    for j, i in enumerate(range(0, len(blocks), shape.batch)):
        if max_batches is not None and j >= max_batches:
            break
        b = make_batch(blocks[i:i + shape.batch], device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
            s, c = token_loss_sum(logits, b["labels"])
        total += s.double()
        count += c
    model.train(was)
    return float(torch.exp(total / count.clamp(min=1)).clamp(max=1e12))


def _probe_step_s(model, opt, batches, device, n: int) -> float:
    """Seconds per step from n steps at lr 0 (weights unchanged; optimizer state cleared afterwards)."""
    lrs = [g["lr"] for g in opt.param_groups]
    for g in opt.param_groups:
        g["lr"] = 0.0
    times = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        train_step(model, next(batches), opt, device, clip=1.0)
        sync(device)
        times.append(time.perf_counter() - t0)
    for g, lr in zip(opt.param_groups, lrs, strict=True):
        g["lr"] = lr
    opt.state.clear()
    return median(times[1:] if len(times) > 1 else times)


def pretrain(data: dict[str, np.ndarray], shape: Shape, vocab: int, device: torch.device, budget_s: float,
             max_epochs: float, lr: float, log: Log, max_steps: int | None = None, eval_batches: int | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pre-train a fresh model on Shakespeare for ~budget_s; returns the best-val weights (CPU) and a record."""
    t_start = time.perf_counter()
    model = build_model(shape, device, seed=0, vocab=vocab)
    opt = torch.optim.AdamW(decay_groups(model.named_parameters(), lr, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    batches = block_batches(data["shakespeare_train"], shape.batch, shape.seq, device, seed=0)
    step_s = _probe_step_s(model, opt, batches, device, 4)
    epoch_steps = len(data["shakespeare_train"]) // (shape.seq * shape.batch)
    steps = max(2, min(int(max_epochs * epoch_steps), int(budget_s / step_s * 0.9)))
    if max_steps is not None:
        steps = min(steps, max_steps)
    log(f"[pretrain] {count_params(model)[1] / 1e6:.1f}M params, {step_s * 1e3:.1f} ms/step → {steps} steps "
        f"({steps / epoch_steps:.2f} epochs of {epoch_steps} steps)")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, total_steps=steps, warmup_ratio=0.05))
    evals = sorted({max(1, round(steps * f / 8)) for f in range(1, 9)})
    curve, best, best_sd, train_s = [], float("inf"), None, 0.0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        train_step(model, next(batches), opt, device, clip=1.0)
        sched.step()
        if step in evals:
            sync(device)
            train_s += time.perf_counter() - t0
            ppl = val_ppl(model, data["shakespeare_val"], shape, device, eval_batches)
            curve.append({"step": step, "tokens": step * shape.batch * shape.seq, "val_ppl": ppl})
            log(f"[pretrain] step {step}/{steps} val ppl {ppl:.2f}")
            if ppl < best:
                best, best_sd = ppl, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            train_s += time.perf_counter() - t0
    rec = {"params": count_params(model)[1], "steps": steps, "step_s_probe": step_s,
           "tokens": steps * shape.batch * shape.seq, "epochs": steps / epoch_steps,
           "tokens_per_s": steps * shape.batch * shape.seq / max(train_s, 1e-9), "curve": curve,
           "best_val_ppl": best, "pycode_val_ppl": None, "wall_s": time.perf_counter() - t_start}
    model.load_state_dict(best_sd)
    rec["pycode_val_ppl"] = val_ppl(model, data["pycode_val"], shape, device, eval_batches)
    del model, opt
    return best_sd, rec


def cpt_method_cfg(variant: str, assess_samples: int) -> dict[str, Any]:
    """vanilla = configs full + experiment full_cpt; apex_mls<X> = apex + experiment apex_cpt, mixer_lr_scale X."""
    if variant == "vanilla":
        return {**method_config("full"), **experiment_method("full_cpt")}
    scale = float(variant.split("mls", 1)[1])
    return {**method_config("apex"), **experiment_method("apex_cpt"), "mixer_lr_scale": scale,
            "assess_samples": assess_samples}


def cpt_run(base_sd: dict[str, torch.Tensor], variant: str, seed: int, data: dict[str, np.ndarray], shape: Shape,
            vocab: int, device: torch.device, steps: int, lr: float, assess_samples: int, log: Log,
            eval_batches: int | None = None) -> dict[str, Any]:
    """Continued pre-training on pycode from the base weights; val ppl at 6 points, then fused."""
    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(shape, device, seed=0, vocab=vocab)
    model.load_state_dict(base_sd)
    method = build_method(cpt_method_cfg(variant, assess_samples), seed=seed)
    train = data["pycode_train"]
    model = method.prepare(model, assess_batches=block_batches(train, shape.batch, shape.seq, device, seed))
    opt = torch.optim.AdamW(method.param_groups(model, lr, 0.0), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    bounds = method.boundaries(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(
        lr_factor, total_steps=steps, warmup_ratio=0.03, boundaries=bounds, policy=method.stage_lr,
        restart_warmup_ratio=0.005))
    batches = block_batches(train, shape.batch, shape.seq, device, seed)
    evals = sorted({max(1, round(steps * f / 6)) for f in range(1, 7)})
    curve, transitions, train_s, losses = [], [], 0.0, []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        losses.append(train_step(model, next(batches), opt, device, clip=1.0))
        sched.step()
        if step in bounds:
            sync(device)
            t1 = time.perf_counter()
            method.end_stage(model, opt)
            sync(device)
            transitions.append(time.perf_counter() - t1)
        if step in evals:
            sync(device)
        train_s += time.perf_counter() - t0
        if step in evals:
            ppl = val_ppl(model, data["pycode_val"], shape, device, eval_batches)
            curve.append({"step": step, "tokens": step * shape.batch * shape.seq, "val_ppl": ppl})
    trainable = count_params(model)[0]
    ppl_wrapped = curve[-1]["val_ppl"]
    model = method.finalize(model)
    rec = {"variant": variant, "seed": seed, "steps": steps, "tokens": steps * shape.batch * shape.seq,
           "boundaries": bounds, "stage_lr": method.stage_lr, "trainable_params": trainable,
           "assess_tokens": getattr(method, "assess_tokens", 0), "curve": curve, "val_ppl": ppl_wrapped,
           "val_ppl_fused": val_ppl(model, data["pycode_val"], shape, device, eval_batches),
           "shakespeare_val_ppl": val_ppl(model, data["shakespeare_val"], shape, device, eval_batches),
           "final_train_loss": float(torch.stack(losses[-10:]).float().mean()),
           "tokens_per_s": steps * shape.batch * shape.seq / max(train_s, 1e-9), "transition_s": transitions,
           "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
           "wall_s": time.perf_counter() - t_start}
    if method.cfg.get("mixer_lr_scale") is not None:
        rec["mixer_lr_scale"] = float(method.cfg["mixer_lr_scale"])
    log(f"[cpt] {variant} seed {seed}: val ppl {rec['val_ppl']:.3f} (fused {rec['val_ppl_fused']:.3f}), "
        f"{rec['tokens_per_s']:.0f} tok/s, {rec['wall_s']:.0f} s")
    return rec


def match_fraction(vanilla_ppl: float, curve: list[dict[str, Any]], total_tokens: int) -> float | None:
    """Fraction of the run's tokens after which `curve` first reaches `vanilla_ppl` (None if never)."""
    for point in curve:
        if point["val_ppl"] <= vanilla_ppl:
            return point["tokens"] / total_tokens
    return None
