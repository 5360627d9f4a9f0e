"""Log to the active W&B run, if there is one (training opens it; a standalone eval usually does not).

Everything here is best effort: a W&B problem must never fail an evaluation or a training run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("apexlm")


def active_run() -> Any | None:
    """The current `wandb.run`, or None (W&B not installed or no run open)."""
    try:
        import wandb
    except ImportError:
        return None
    return wandb.run


def log_to_wandb(metrics: Mapping[str, float] | None = None, images: Mapping[str, Path] | None = None,
                 tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]] | None = None) -> bool:
    """Log scalars, PNG images and tables ({key: (columns, rows)}) to the active run; True if logged."""
    run = active_run()
    if run is None:
        return False
    try:
        import wandb

        payload: dict[str, Any] = dict(metrics or {})
        for key, path in (images or {}).items():
            payload[key] = wandb.Image(str(path))
        for key, (columns, rows) in (tables or {}).items():
            payload[key] = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        if payload:
            run.log(payload)
        if metrics:
            run.summary.update(dict(metrics))
        return True
    except Exception as err:  # noqa: BLE001 - logging is optional, the results are on disk already
        log.warning("W&B logging skipped: %s", err)
        return False
