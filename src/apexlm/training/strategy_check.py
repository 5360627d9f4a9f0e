"""Strategy x method x device combinations that cannot run: stop before training with one line (exit 2).

Why: the unsupported cases otherwise fail late and badly — a traceback from Lightning or DeepSpeed after the
model is built, or, worse, a run that trains but silently undoes APEX's stage transitions (DeepSpeed ZeRO keeps
fp32 master partitions of the weights and copies them back over the parameters after each step, so every
in-place fold / permute / reset of a trainable tensor is lost; its optimizer state is not keyed by the model's
Parameters either). `check_strategy(cfg)` reads only the config (and whether a package / a GPU is there) and
is called by `validate_config`. The capability it checks lives on the method classes
(`Method.rewrites_weights_in_place`, `Method.edits_gradients`), so a new method declares it once.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig

from apexlm.errors import ConfigError
from apexlm.methods import method_class

# Lightning's registry names this project runs (trainer configs: cpu, gpu, ddp, fsdp, deepspeed) and the
# sharded strategy's own names. Anything else is refused here instead of deep inside Lightning.
KNOWN = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true",
         "ddp_find_unused_parameters_false", "fsdp", "fsdp2", "model_parallel", "deepspeed", "deepspeed_stage_1",
         "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload")
GPU_ACCELERATORS = ("gpu", "cuda")


def _int(value: Any, name: str, lo: int = 1) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be an integer >= {lo}") from None
    if isinstance(value, bool) or out < lo or (isinstance(value, float) and value != out):
        raise ConfigError(f"{name}={value!r} must be an integer >= {lo}")
    return out


def processes(t: DictConfig) -> int:
    """Training processes the trainer config asks for: devices (int, list, 'auto') x num_nodes."""
    nodes = t.get("num_nodes")  # null (no SLURM launcher) = one node
    nodes = 1 if nodes is None else _int(nodes, "trainer.num_nodes")
    dev = t.get("devices", 1)
    if isinstance(dev, str) and dev.strip().lstrip("-").isdigit():
        dev = int(dev)
    if dev in ("auto", -1, None):
        if str(t.get("accelerator", "cpu")) in GPU_ACCELERATORS:
            import torch

            dev = max(1, torch.cuda.device_count())
        else:
            dev = 1
    elif not isinstance(dev, int):
        dev = len(list(dev)) if hasattr(dev, "__len__") and not isinstance(dev, str) else dev
    return _int(dev, "trainer.devices") * nodes


def check_strategy(cfg: DictConfig) -> None:
    """Raise a one-line ConfigError for a strategy x method x device combination this project cannot run."""
    t, method = cfg.trainer, str(cfg.method.get("name"))
    strategy = str(t.get("strategy", "auto"))
    accel = str(t.get("accelerator", "cpu"))
    if strategy not in KNOWN:
        raise ConfigError(f"trainer.strategy={strategy} is unknown; use trainer=cpu|gpu (auto), trainer=ddp, "
                          "trainer=fsdp or trainer=deepspeed")
    world = processes(t)
    if strategy.startswith("deepspeed"):
        cls = method_class(method)
        if cls.rewrites_weights_in_place:
            raise ConfigError(f"trainer=deepspeed cannot run method={method}: its stage transitions rewrite trainable "
                              "weights in place and ZeRO copies its fp32 master partitions back over them; use "
                              "trainer=fsdp")
        if cls.edits_gradients:
            raise ConfigError(f"trainer=deepspeed cannot run method={method}: it masks p.grad before each step and "
                              "ZeRO keeps gradients in its own buffers; use trainer=fsdp")
        if accel not in GPU_ACCELERATORS:
            raise ConfigError("trainer=deepspeed needs GPUs (trainer.accelerator=gpu); on CPU use trainer=fsdp "
                              "trainer.accelerator=cpu trainer.devices=2")
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("trainer=deepspeed needs the deepspeed package: pip install deepspeed (on the GPU "
                              "machine, with a CUDA toolkit), or use trainer=fsdp")
    if strategy.startswith(("fsdp", "model_parallel")) and accel == "cpu" and world < 2:
        raise ConfigError("trainer=fsdp on CPU shards over gloo processes: set trainer.devices=2 (or more), or use "
                          "trainer=cpu for one process")
    if accel in GPU_ACCELERATORS:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accel} but no CUDA GPU is visible; use trainer=cpu, or "
                              "trainer=ddp|fsdp trainer.accelerator=cpu trainer.devices=2")
    if method == "hft" and (strategy.startswith("ddp") or strategy == "auto") and world > 1 and \
            str(cfg.method.get("freeze", "requires_grad")) == "requires_grad":
        raise ConfigError("method=hft with method.freeze=requires_grad cannot redraw its half under DDP (DDP syncs "
                          "only the parameters that required grad when it wrapped the model); add method.freeze=mask")
