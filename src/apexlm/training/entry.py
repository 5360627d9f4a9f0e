"""Process-level behaviour of `train.py`: user errors become one line + exit 2; sweep jobs never kill a sweep."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
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
    from apexlm.training.run import fit
    from apexlm.utils.console import tidy_logging

    tidy_logging()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _is_multirun()
    try:
        summary = fit(cfg, run_dir)[0]
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
    if rank_zero_only.rank == 0:
        print(result_line(summary), flush=True)
    return summary


def result_line(summary: dict[str, Any]) -> str:
    """The one line a run ends with: what it reached, how fast, how many stages, what trained, where it is."""
    ppl = summary.get("final_val_ppl")
    parts = [f"val ppl {ppl:.2f}" if isinstance(ppl, (int, float)) else "val ppl n/a",
             f"{summary.get('tokens_per_s') or 0:,.0f} tok/s",
             f"stages {summary.get('stages_completed')}",
             f"trainable {100 * float(summary.get('trainable_fraction') or 0):.1f}%",
             f"run dir {summary.get('run_dir')}"]
    return "result: " + " | ".join(parts)
