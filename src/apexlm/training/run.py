"""The training pipeline behind `train.py`: config -> data -> model -> method -> Lightning fit -> summary.

Everything that can be wrong with the config, the data or the model is checked before the first step, so a
bad run stops in seconds with one line instead of failing an hour in.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from apexlm.callbacks.stage_boundary import StageBoundaryCallback
from apexlm.callbacks.throughput import ThroughputCallback, peak_memory_mb
from apexlm.data.resumable import make_resumable
from apexlm.errors import ConfigError
from apexlm.methods import build_method
from apexlm.methods.base import count_params
from apexlm.models.builders import build_model
from apexlm.models.module import CausalLMModule, perplexity
from apexlm.models.tokenizer import load_run_tokenizer
from apexlm.training.find_checkpoint import resolve_ckpt_path
from apexlm.training.setup import build_callbacks, build_trainer_kwargs, total_steps_for
from apexlm.training.validate import validate_config
from apexlm.utils.loggers import build_loggers, finish_wandb
from apexlm.utils.summary import write_json

log = logging.getLogger("apexlm")


def fit(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = ()
        ) -> tuple[dict[str, Any], CausalLMModule]:
    """Train one configuration; returns its summary (also written to summary.json) and the trained
    (finalized) module. `callbacks` are added after the pipeline's own (tests and benchmarks use it)."""
    validate_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))
    from apexlm.data.datamodule import build_datamodule

    tokenizer = load_run_tokenizer(cfg)
    model = build_model(cfg.model, tokenizer)
    dm = build_datamodule(cfg.data, tokenizer, seed=int(cfg.seed))
    dm.setup("fit")
    make_resumable(dm)  # data order = f(seed, epoch); the position in the epoch is checkpointed
    total_steps = total_steps_for(cfg, dm)
    method = build_method(cfg.method, seed=int(cfg.seed))
    base_params = count_params(model)[1]  # before wrapping: trainable fractions are of the plain model
    if ckpt_path:  # no assessment pass: the checkpoint holds the method state (APEX: wrappers installed on load)
        model = method.prepare_for_resume(model)
    else:
        model = method.prepare(model, assess_batches=dm.train_dataloader())
    model.train()  # from_pretrained gives eval mode; Lightning keeps whatever mode it finds
    if count_params(model)[0] == 0:
        raise ConfigError("the method left no trainable parameters; check the method config")
    module = CausalLMModule(model, method, cfg.optim, total_steps, base_params=base_params)

    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, group=str(cfg.experiment_name), job_type=str(cfg.method.name),
                            run_config=run_cfg)
    tput = ThroughputCallback()
    trainer = L.Trainer(logger=loggers, callbacks=[StageBoundaryCallback(out_dir=str(run_dir / "stages")), tput,
                                                   *build_callbacks(cfg, run_dir), *callbacks],
                        default_root_dir=str(run_dir), **build_trainer_kwargs(cfg, total_steps))
    try:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_s = time.perf_counter() - t0
        summary = _finish(cfg, run_dir, trainer, module, dm, tokenizer, tput, fit_s)
    finally:
        finish_wandb()
    return summary, module


def _final_val(trainer: L.Trainer, module: CausalLMModule, dm: Any) -> dict[str, float]:
    if trainer.limit_val_batches == 0:
        return {}
    res = trainer.validate(module, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in (res[0] if res else {}).items()}


def budget_summary(raw: dict[str, Any], base_params: int | None) -> dict[str, Any]:
    """A method's summary with the budget over the plain model's parameters (as `apexlm.budget` prints it);
    the count during training (with operators / adapters) stays as `params_in_training`. Taken before
    `finalize`, since fusing or merging drops the extra parameters and their trainable flags."""
    if not base_params:
        return raw
    return {**raw, "params_in_training": raw["total_params"], "total_params": base_params,
            "trainable_fraction": raw["trainable_params"] / base_params}


def _finish(cfg: DictConfig, run_dir: Path, trainer: L.Trainer, module: CausalLMModule, dm: Any,
            tokenizer: Any, tput: ThroughputCallback, fit_s: float) -> dict[str, Any]:
    method = module.method
    method_summary = budget_summary(method.summary(module.model), module.base_params)  # before finalize
    module.model = method.finalize(module.model)  # plain HF model again (APEX fused, adapters merged)
    val = _final_val(trainer, module, dm)
    if cfg.get("export") and trainer.is_global_zero:
        export_dir = run_dir / "export"
        module.model.save_pretrained(str(export_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(export_dir))
        if cfg.get("export_to"):
            target = Path(str(cfg.export_to))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(export_dir, tmp)
            tmp.rename(target)
    summary: dict[str, Any] = {
        "method": str(cfg.method.name),
        "experiment": str(cfg.experiment_name),
        "seed": int(cfg.seed),
        "run_dir": str(run_dir),
        **method_summary,
        "tokens_seen": int(module.tokens_seen),
        "train_time_s": tput.train_time_s or fit_s,
        "tokens_per_s": tput.tokens_per_s,
        "peak_mem_mb": peak_memory_mb(module.device),
        "optimizer_steps": int(trainer.global_step),
        "stages_completed": int(method.stage) + 1,
        "stage_boundaries": list(module.boundaries),
        "optimizer_resets": method.optimizer_resets,
        "final_val_loss": val.get("val/loss"),
        "final_val_ppl": perplexity(val["val/loss"]) if "val/loss" in val else None,
        "exported": bool(cfg.get("export")),
    }
    if cfg.get("eval", {}).get("enabled") and trainer.is_global_zero:
        from apexlm.eval.run_eval import evaluate_model

        eval_res = evaluate_model(module.model, tokenizer, cfg, run_dir)
        summary.update({f"eval/{k}": v for k, v in eval_res.items() if isinstance(v, (int, float))})
    if trainer.is_global_zero:
        write_json(run_dir / "summary.json", summary)
        for lg in trainer.loggers:
            lg.log_metrics({f"summary/{k}": v for k, v in summary.items() if isinstance(v, (int, float))},
                           step=trainer.global_step)
    return summary
