"""Experiment loggers: a CSV record always, W&B when asked — offline unless the user configured W&B.

W&B with no API key fails at init in online mode; offline mode never touches the network and finishes in about
a second. So `mode: auto` means online only when WANDB_API_KEY is set (or WANDB_MODE says otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

from apexlm.errors import ConfigError


def wandb_mode(requested: str) -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def build_loggers(cfg: Mapping[str, Any], run_dir: Path, group: str, job_type: str,
                  run_config: Mapping[str, Any] | None = None) -> list[Logger]:
    kind = str(cfg.get("kind", "csv"))
    if kind not in ("wandb", "csv", "none"):
        raise ConfigError(f"logger={kind!r} is unknown; use wandb, csv or none")
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = wandb_mode(str(cfg.get("mode", "auto")))
        os.environ.setdefault("WANDB_SILENT", "true")
        wb = WandbLogger(project=str(cfg.get("project", "apexlm")), save_dir=str(run_dir), group=group,
                         job_type=job_type, tags=list(cfg.get("tags") or []), mode=mode,
                         name=cfg.get("name") or None, entity=cfg.get("entity") or None)
        wb._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None; W&B warns it has no effect
        if run_config is not None:
            wb.log_hyperparams(dict(run_config))
        loggers.append(wb)
    return loggers


def finish_wandb() -> None:
    """Close any open W&B run (a sweep job that failed must not leave it open)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # noqa: BLE001 - finishing is best effort and must never mask the real error
        pass
