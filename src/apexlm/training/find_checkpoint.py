"""Finding the checkpoint a run resumes from: `ckpt_path=<file>` or `ckpt_path=last`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apexlm.errors import ConfigError


def resolve_ckpt_path(cfg: Mapping[str, Any]) -> str | None:
    """`ckpt_path` as a file: null -> None; "last" -> the newest last.ckpt of this experiment's runs."""
    value = cfg.get("ckpt_path")
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        root = Path(str(cfg["paths"]["log_dir"])) / str(cfg["experiment_name"]) / "runs"
        found = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last found no {root}/*/checkpoints/last.ckpt; train with "
                              "callbacks.checkpoint.enabled=true first or give ckpt_path=<file.ckpt>")
        return str(found[-1])
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value} is not a checkpoint file; give an existing .ckpt or ckpt_path=last")
    return str(path)
