"""What an evaluation is asked to do (`cfg.eval` over the defaults) and where its results may be written.

Apart from `run_eval` so that the harness adapter and the runner both read them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "ppl_domains": ["shakespeare", "pycode"], "val": True, "max_ppl_batches": 8, "block_size": None,
    "exact_match": True, "multiple_choice": True, "items_path": None, "max_items_per_task": 16,
    "max_new_tokens": 40, "mc_max_choices": 10, "batch_size": 8, "analytics": False, "analytics_batches": 2,
    "harness": {},
}


def eval_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg.eval` over the defaults (so older run configs with fewer keys still evaluate)."""
    from omegaconf import DictConfig, OmegaConf

    given = cfg.get("eval") or {}
    if isinstance(given, DictConfig):
        given = OmegaConf.to_container(given, resolve=True)
    return {**DEFAULTS, **dict(given)}


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem+suffix`, or a timestamped sibling when that file exists (never overwrite results)."""
    path = folder / f"{stem}{suffix}"
    if path.exists():
        path = folder / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}{suffix}"
    return path
