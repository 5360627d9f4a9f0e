"""Shared pieces of the benchmarks: model shapes, batches, one training step, timing, memory, machine line.

Everything here is plain torch + transformers + apexlm (no Hydra), so it runs on the GPU image as is.
Shapes are LLaMA-style and built fresh from a `LlamaConfig` (no pretrained weights needed):

    micro     64 hidden, 2 layers, 4/2 heads (GQA), ffn 96    tests and dry runs
    tiny      256, 4 layers, 8 heads, ffn 688, vocab 8192      the project's ~5M tiny model (CPU --quick)
    base100m  768, 12 layers, 12 heads, ffn 2048, vocab 8192   ~91M base pre-trained by gpu_check
    125m      768, 12 layers, 12 heads, ffn 2048, vocab 32000  llama-shaped 125M
    1b        2048, 22 layers, 32/4 heads, ffn 5632, v 32000   TinyLlama-1.1B shape (GQA)
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:          # apexlm importable from a bare checkout (GPU machine)
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from apexlm.models.module import token_loss_sum  # noqa: E402

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Shape:
    """Model geometry and the batch it is benchmarked with."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    batch: int
    seq: int
    tied: bool = True


SHAPES: dict[str, Shape] = {
    "micro": Shape(64, 2, 4, 2, 96, 512, 2, 64),
    "tiny": Shape(256, 4, 8, 8, 688, 8192, 8, 256),
    "base100m": Shape(768, 12, 12, 12, 2048, 8192, 16, 512),
    "125m": Shape(768, 12, 12, 12, 2048, 32000, 8, 1024, tied=False),
    "1b": Shape(2048, 22, 32, 4, 5632, 32000, 4, 1024, tied=False),
}


def llama_config(shape: Shape, vocab: int | None = None) -> LlamaConfig:
    """A LlamaConfig of `shape` (vocab overridable, e.g. to the tokenizer's size)."""
    return LlamaConfig(vocab_size=vocab or shape.vocab, hidden_size=shape.hidden,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, intermediate_size=shape.ffn,
                       max_position_embeddings=max(512, shape.seq), tie_word_embeddings=shape.tied,
                       attention_dropout=0.0, use_cache=False)


def build_model(shape: Shape, device: torch.device, seed: int = 0, vocab: int | None = None
                ) -> LlamaForCausalLM:
    """Fresh float32 model, initialised on `device` from `seed` (same seed, device → same weights)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(shape, vocab))
    model.config.use_cache = False
    return model.float().train()


def make_batch(ids: torch.Tensor, device: torch.device) -> Batch:
    """Packed-text batch (B, T): labels = input_ids, attention mask all ones (as `BlockDataset`)."""
    ids = ids.to(device=device, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def random_batches(n: int, shape: Shape, device: torch.device, seed: int = 1, vocab: int | None = None
                   ) -> list[Batch]:
    """n seeded batches of uniform random tokens (timing does not depend on token values)."""
    g = torch.Generator().manual_seed(seed)
    return [make_batch(torch.randint(0, vocab or shape.vocab, (shape.batch, shape.seq), generator=g), device)
            for _ in range(n)]


def block_batches(tokens: np.ndarray, batch: int, seq: int, device: torch.device, seed: int,
                  limit: int | None = None) -> Iterator[Batch]:
    """Endless shuffled batches of packed blocks from a token stream (a new permutation every epoch)."""
    blocks = torch.from_numpy(tokens[: len(tokens) // seq * seq].astype(np.int64)).view(-1, seq)
    if len(blocks) < batch:
        raise ValueError(f"{len(tokens)} tokens give {len(blocks)} blocks of {seq}: fewer than one batch")
    g = torch.Generator().manual_seed(seed)
    made = 0
    while True:
        perm = torch.randperm(len(blocks), generator=g)
        for i in range(0, len(perm) - batch + 1, batch):
            if limit is not None and made >= limit:
                return
            made += 1
            yield make_batch(blocks[perm[i:i + batch]], device)


# ---- one step -------------------------------------------------------------------------------------
def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the trainer's bf16-mixed), nothing on CPU (fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_of(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Token-mean next-token loss, exactly as `CausalLMModule.training_step` computes it."""
    with autocast(device):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits                                  # (B, T, V)
        loss_sum, count = token_loss_sum(logits, batch["labels"])
    return loss_sum / count.clamp(min=1)


def train_step(model: torch.nn.Module, batch: Batch, opt: torch.optim.Optimizer, device: torch.device,
               clip: float | None = None) -> torch.Tensor:
    """forward → backward → (clip) → AdamW step → zero_grad(set_to_none). Returns the detached loss."""
    loss = loss_of(model, batch, device)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of fn(), device-synchronised on both sides."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def timed_both(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn(). CPU time is far less sensitive to other processes on a
    busy machine; with one torch thread it is the work done, with several it includes OpenMP spinning."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


# ---- memory ---------------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory a block of work adds on top of what was allocated when `start()` ran.

    CUDA: torch.cuda.max_memory_allocated minus memory_allocated at start (exact, allocator-level).
    CPU: growth of the process peak RSS (VmHWM, reset through /proc/self/clear_refs after malloc_trim),
    an approximation (the C allocator keeps freed pages); None where the kernel does not allow it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.ok = True

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")                                 # reset VmHWM to the current RSS
            self.base = _proc_status_kb("VmRSS") or 0
            self.ok = bool(self.base)
        except OSError:
            self.ok = False

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        hwm = _proc_status_kb("VmHWM")
        return None if not self.ok or hwm is None else (hwm - self.base) / 1024.0


# ---- configs and machine --------------------------------------------------------------------------
def method_config(name: str, **overrides: Any) -> dict[str, Any]:
    """configs/method/<name>.yaml as a plain dict (no Hydra: `defaults` dropped), plus overrides."""
    import yaml

    with open(ROOT / "configs" / "method" / f"{name}.yaml") as f:
        cfg = {k: v for k, v in (yaml.safe_load(f) or {}).items() if k != "defaults"}
    cfg.update(overrides)
    return cfg


def experiment_method(name: str) -> dict[str, Any]:
    """The `method:` overrides of configs/experiment/<name>.yaml."""
    import yaml

    with open(ROOT / "configs" / "experiment" / f"{name}.yaml") as f:
        return dict((yaml.safe_load(f) or {}).get("method") or {})


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: CPU/GPU model, threads, library versions, precision."""
    import transformers

    info: dict[str, Any] = {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "python": platform.python_version(),
                            "device": device.type, "precision": "fp32"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_mem_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, precision="bf16 autocast (fp32 weights)")
    return info


def machine_line(info: dict[str, Any]) -> str:
    head = info.get("gpu") or info["cpu"]
    extra = f", CUDA {info['cuda']}" if info.get("cuda") else ""
    return (f"machine: {head}{extra} | {info['torch_threads']} torch threads of {info['logical_cpus']} "
            f"logical CPUs ({info['cpu']}) | torch {info['torch']} | transformers {info['transformers']} "
            f"| {info['precision']}")


def shape_dict(name: str, shape: Shape) -> dict[str, Any]:
    return {"name": name, **asdict(shape)}
