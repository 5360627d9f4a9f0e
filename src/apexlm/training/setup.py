"""Small builders for the pipeline: tokenizer choice, step budget, Lightning Trainer arguments, callbacks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

TRAINER_PASSTHROUGH = (
    "accelerator", "devices", "num_nodes", "precision", "strategy", "accumulate_grad_batches",
    "gradient_clip_val", "val_check_interval", "check_val_every_n_epoch", "log_every_n_steps",
    "limit_train_batches", "limit_val_batches", "num_sanity_val_steps", "overfit_batches", "deterministic",
    "enable_progress_bar", "enable_model_summary", "benchmark", "detect_anomaly", "use_distributed_sampler",
)
# every key a trainer config may hold: passed to Lightning as is, or read by the pipeline itself
TRAINER_KEYS = (*TRAINER_PASSTHROUGH, "max_steps", "max_epochs", "compile")  # compile: training/compile.py


def total_steps_for(cfg: DictConfig, dm: Any) -> int:
    """Optimizer steps of the run: trainer.max_steps, or epochs x batches / accumulation."""
    t = cfg.trainer
    if t.get("overfit_batches"):
        return int(t.max_steps)
    if int(t.get("max_steps", -1)) > 0:
        return int(t.max_steps)
    batches = len(dm.train_dataloader())
    if t.get("limit_train_batches") and isinstance(t.limit_train_batches, int):
        batches = min(batches, int(t.limit_train_batches))
    return int(t.get("max_epochs", 1)) * math.ceil(batches / int(t.get("accumulate_grad_batches", 1)))


def build_trainer_kwargs(cfg: DictConfig, total_steps: int) -> dict[str, Any]:
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    kw = {k: t[k] for k in TRAINER_PASSTHROUGH if k in t and t[k] is not None}
    kw["max_steps"] = total_steps
    kw["max_epochs"] = -1
    if str(kw.get("strategy", "auto")).startswith(("auto", "ddp")):  # sharded strategies write their own format
        from apexlm.training.checkpoint_io import AtomicCheckpointIO

        kw["plugins"] = [AtomicCheckpointIO()]
    return kw


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from apexlm.callbacks.guard import NumericalGuard, RankAgreementGuard
    from apexlm.training.rng_state import RngStateCallback
    from apexlm.utils.console import StepProgressBar

    c = cfg.get("callbacks") or {}
    guard = c.get("guard") or {}
    cb: list[L.Callback] = [NumericalGuard(str(guard.get("on_nonfinite", "stop"))), RankAgreementGuard(),
                            RngStateCallback()]
    if (cfg.get("eval") or {}).get("analytics"):
        from apexlm.callbacks.analytics import AnalyticsCallback

        cb.append(AnalyticsCallback(cfg, run_dir))
    if c.get("lr_monitor", True):
        cb.append(LearningRateMonitor(logging_interval="step"))
    ck = c.get("checkpoint") or {}
    if ck.get("enabled", True):
        cb.append(ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                                  every_n_train_steps=int(ck.get("every_n_steps", 50))))
    if cfg.trainer.get("compile"):  # trainer.compile: true | backend name (training/compile.py)
        from apexlm.training.compile import CompileModel
        cb.append(CompileModel(cfg.trainer.compile))
    if c.get("rich_progress", True) and cfg.trainer.get("enable_progress_bar", True):
        cb.append(StepProgressBar(leave=True))
    return cb
