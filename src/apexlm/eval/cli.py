"""Process-level behaviour of `eval.py`: pick what to evaluate, run `evaluate_model`, one-line errors.

A `UserError` (missing run dir, no model, bad data) prints `error: <what and how to fix>` and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from apexlm.errors import ConfigError, UserError
from apexlm.eval.loading import load_hf_model, load_run_config, load_run_model
from apexlm.eval.run_eval import evaluate_model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use device=cpu or auto")
    return torch.device(name)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _open_wandb(cfg: DictConfig, run_cfg: DictConfig, out_dir: Path) -> None:
    import wandb

    from apexlm.utils.loggers import wandb_mode

    wandb.init(project="apexlm", job_type="eval", dir=str(out_dir), mode=wandb_mode("auto"),
               config=OmegaConf.to_container(run_cfg, resolve=False),
               group=str(run_cfg.get("experiment_name")))


def _check_harness(cfg: DictConfig) -> None:
    """Unknown harness task names / missing task data stop before a model is loaded."""
    from apexlm.eval.run_eval import wants_harness
    from apexlm.eval.settings import eval_settings

    if wants_harness(eval_settings(cfg)):
        from apexlm.eval.harness import check_harness

        check_harness(cfg)


def run_evaluation(cfg: DictConfig) -> tuple[dict[str, Any], Path, str]:
    """(results, folder holding eval.json, what was evaluated) for an eval.py config."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.get("seed", 0)))
    run_dir, pretrained = cfg.get("run_dir"), cfg.model.get("pretrained")
    if run_dir and pretrained:
        raise ConfigError("give run_dir=<run dir> or model.pretrained=<model>, not both")
    if run_dir:
        target = Path(str(run_dir)).expanduser()
        run_cfg = load_run_config(target, cfg)
        _check_harness(run_cfg)
        model, tokenizer, source = load_run_model(target, run_cfg)
    elif pretrained:
        _check_harness(cfg)
        model, tokenizer = load_hf_model(str(pretrained), cfg.model.get("tokenizer"))
        run_cfg, target, source = cfg, _output_dir(), str(pretrained)
    else:
        raise ConfigError("nothing to evaluate: give run_dir=<train.py run dir> or "
                          "model.pretrained=<HF model dir or hub id>")
    model = model.to(_device(str(cfg.get("device", "auto"))))
    if cfg.get("wandb"):
        _open_wandb(cfg, run_cfg, target)
    try:
        results = evaluate_model(model, tokenizer, run_cfg, target)
    finally:
        from apexlm.utils.loggers import finish_wandb

        finish_wandb()
    return results, target, source


def eval_main(cfg: DictConfig) -> dict[str, Any] | None:
    """eval.py's body: evaluate, print the headline numbers; a UserError → one line on stderr, exit 2."""
    try:
        results, target, source = run_evaluation(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"evaluated: {source}", flush=True)
    for key in sorted(results):
        if key.startswith(("ppl/", "exact_match", "mc_accuracy", "harness/")) and isinstance(results[key], float):
            print(f"  {key}: {results[key]:.4f}", flush=True)
    for note in results.get("notes", []):
        print(f"  note: {note}", flush=True)
    print(f"results in: {target}", flush=True)
    return results
