"""The secondary measurements of bench_overhead: scoring hooks alone, stage transitions, fused inference,
and a per-op profile of one training step."""

from __future__ import annotations

from typing import Any

import torch
from bench_common import autocast, loss_of, median, sync, timed, timed_both, train_step

from apexlm.apex import Apex, ApexConfig
from apexlm.apex.expanded_linear import ExpandedLinear


def hook_cost(model: torch.nn.Module, batches: list[dict], device: torch.device, reps: int) -> dict[str, Any]:
    """Forward + backward of the plain model with the score recorders attached vs detached (interleaved).

    The model is in training mode, so the recorders record (as during APEX training).
    """
    model.train()
    apex = Apex(model, ApexConfig())                        # attaches the recorders

    def fwd_bwd(i: int) -> None:
        loss_of(model, batches[i % len(batches)], device).backward()
        model.zero_grad(set_to_none=True)

    fwd_bwd(0)
    t: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(reps):
        for state in ((True, False) if i % 2 == 0 else (False, True)):
            if state:
                apex.recorder.attach()
            else:
                apex.recorder.detach()
            t[state].append(timed_both(lambda i=i: fwd_bwd(i), device))
    apex.close()
    on, off = [w for w, _ in t[True]], [w for w, _ in t[False]]
    on_cpu, off_cpu = median([c for _, c in t[True]]), median([c for _, c in t[False]])
    return {"on_s": median(on), "off_s": median(off), "ratio": median(on) / median(off),
            "cpu_ratio": on_cpu / off_cpu, "on_s_all": on, "off_s_all": off}


def restage_cost(runner: Any, batches: list[dict], device: torch.device, reps: int = 3) -> dict[str, Any]:
    """Time `Apex.restage(optimizer)` as the stage callback runs it, with one training step in between."""
    apex = runner.method.apex
    times = []
    for i in range(reps):
        times.append(timed(lambda: apex.restage(runner.opt, reset_base_state=True), device))
        runner.step(batches[i % len(batches)], device)
    return {"median_s": median(times), "times_s": times, "stage": apex.stage}


@torch.no_grad()
def _logits(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    with autocast(device):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     use_cache=False).logits


def fused_inference(it_runner: Any, original: torch.nn.Module, batches: list[dict], device: torch.device,
                    reps: int) -> dict[str, Any]:
    """Fuse the APEX model (as `method.finalize` does) and time its forward against the original model's."""
    model = it_runner.model
    model.eval()
    original.eval()
    ref = _logits(model, batches[0], device).float()
    fuse_s = timed(lambda: it_runner.method.finalize(model), device)
    diff = (_logits(model, batches[0], device).float() - ref).abs().max().item()
    left = sum(isinstance(m, ExpandedLinear) for m in model.modules())
    _logits(original, batches[0], device)
    fused, orig = [], []
    for i in range(reps):
        b = batches[i % len(batches)]
        pair = ((model, fused), (original, orig)) if i % 2 == 0 else ((original, orig), (model, fused))
        for m, acc in pair:
            acc.append(timed(lambda m=m, b=b: _logits(m, b, device), device))
    return {"fused_s": median(fused), "original_s": median(orig), "ratio": median(fused) / median(orig),
            "fuse_s": fuse_s, "max_abs_diff": diff, "wrappers_left": left,
            "fused_s_all": fused, "original_s_all": orig}


def profile_step(runner: Any, batch: dict, device: torch.device, rows: int = 15) -> str:
    """torch.profiler table (self time) of one training step of `runner`."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    train_step(runner.model, batch, runner.opt, device)
    sync(device)
    with profile(activities=acts) as prof:
        train_step(runner.model, batch, runner.opt, device)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
