"""Process-level behaviour of `train.py`: user errors become one line + exit 2; sweep jobs never kill a sweep."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from apexlm.errors import UserError
from apexlm.utils.loggers import finish_wandb
from apexlm.utils.summary import write_json


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def train_main(cfg: DictConfig) -> dict[str, Any] | None:
    from apexlm.training.run import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _is_multirun()
    try:
        summary = run(cfg, run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if multirun:
            write_json(run_dir / "failed.json", {"error": str(e), "kind": type(e).__name__})
            return None
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a sweep job's crash is recorded, the sweep goes on
        if not multirun:
            raise
        logging.getLogger("apexlm").error("job failed: %s", e)
        write_json(run_dir / "failed.json", {"error": str(e), "kind": type(e).__name__,
                                             "traceback": traceback.format_exc()})
        finish_wandb()
        return None
    print(f"run dir: {run_dir}", flush=True)
    print(f"summary: {run_dir / 'summary.json'}", flush=True)
    return summary
