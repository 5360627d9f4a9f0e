"""What `eval.py` evaluates: a training run's model (its export, else its last checkpoint) or any HF model.

A run dir is recognised by `.hydra/config.yaml` (written by train.py). Its config is used as it was for
training (model, data, method, seed); only `paths` and `eval` come from the eval command, so the run is
evaluated with today's data folder and the evaluation knobs given on the command line. Every missing piece
is a one-line `UserError` (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from apexlm.errors import ConfigError, ModelError


def load_run_config(run_dir: Path, eval_cfg: DictConfig) -> DictConfig:
    """The run's own config with `paths` and `eval` taken from the eval command's config."""
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} does not exist; give a train.py run dir "
                          "(logs/<experiment>/runs/<time>)")
    file = run_dir / ".hydra" / "config.yaml"
    if not file.is_file():
        raise ConfigError(f"run_dir={run_dir} has no .hydra/config.yaml, so it is not a train.py run dir; "
                          "give a run dir, or evaluate a model dir with model.pretrained=<dir>")
    cfg = OmegaConf.load(file)
    with open_dict(cfg):
        cfg.paths = eval_cfg.paths
        cfg.eval = eval_cfg.eval
    return cfg


def _checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def load_hf_model(ref: str, tokenizer_ref: str | None = None) -> tuple[nn.Module, Any]:
    """(float32 causal LM, tokenizer) from a local dir or a hub id."""
    from transformers import AutoModelForCausalLM

    from apexlm.data.tokenizer import load_tokenizer

    ref = str(Path(ref).expanduser()) if ref.startswith("~") else ref
    if (ref.startswith(("/", ".")) or ref.count("/") > 1) and not Path(ref).exists():
        raise ModelError(f"model {ref} does not exist; give an existing model dir or a hub id")
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelError(f"cannot load model {ref}: {first}") from None
    return model, load_tokenizer(tokenizer_ref or ref)


def load_run_model(run_dir: Path, cfg: DictConfig) -> tuple[nn.Module, Any, str]:
    """(model, tokenizer, source) of a run: export/, else `export_to`, else the newest checkpoint."""
    for cand in (run_dir / "export", Path(str(cfg.get("export_to"))) if cfg.get("export_to") else None):
        if cand is not None and (cand / "config.json").is_file():
            model, tok = load_hf_model(str(cand))
            return model, tok, str(cand)
    ckpt = _checkpoint(run_dir)
    if ckpt is None:
        raise ModelError(f"run_dir={run_dir} has no export/ and no checkpoint; train with export=true "
                         "or evaluate a model dir with model.pretrained=<dir>")
    from apexlm.eval.checkpoint import model_from_checkpoint
    from apexlm.models.tokenizer import load_run_tokenizer

    tokenizer = load_run_tokenizer(cfg)
    return model_from_checkpoint(cfg, ckpt, tokenizer), tokenizer, str(ckpt)
