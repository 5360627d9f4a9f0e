"""Finding the checkpoint a run resumes from: a requeued job's own, `ckpt_path=<file>` or `ckpt_path=last`.

Why: a preempted or timed-out SLURM job is requeued by submitit into the SAME job dir (a single run's
`runs/<time>/`, a sweep job's `multiruns/<time>/<num>/`); it must continue from that dir's own
`checkpoints/last.ckpt`, and a fresh job in a new dir must never pick up another job's checkpoint (a sweep's
jobs differ in their overrides). Rules, in order:
1. A requeued job (SLURM_RESTART_COUNT >= 1) that has its own `<run dir>/checkpoints/last.ckpt` resumes from it,
   whatever `ckpt_path` says (an explicit `ckpt_path=<file>` was the first launch's starting point).
2. `ckpt_path=null` -> None; `ckpt_path=<file>` -> that file.
3. `ckpt_path=last`: the run dir's own last.ckpt first; otherwise a sweep job starts fresh (its dir is new);
   a single run takes the newest `<log_dir>/<experiment>/runs/*/checkpoints/last.ckpt`.
The run dir is the run's own `paths.output_dir` (Hydra's output dir), never a process-wide setting, so a config
without one (a plain mapping) has no own checkpoint. An own `last.ckpt` may be a file or, for sharded
strategies, a directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apexlm.errors import ConfigError

log = logging.getLogger("apexlm")
LAST = Path("checkpoints") / "last.ckpt"


def run_dir_of(cfg: Mapping[str, Any]) -> tuple[Path | None, bool]:
    """(this run's dir, whether it is a sweep job), from the run's own config (`paths.output_dir`, Hydra's
    output dir); (None, False) when the config has none (a plain mapping, no Hydra app)."""
    try:
        out = (cfg.get("paths") or {}).get("output_dir")
    except ValueError:  # ${hydra:...} outside a Hydra app
        out = None
    if not out:
        return None, False
    run_dir = Path(str(out))
    return run_dir, run_dir.parent.parent.name == "multiruns" or _hydra_multirun(run_dir)


def _hydra_multirun(run_dir: Path) -> bool:
    """Hydra's mode, if Hydra is running this very job (sweep dirs may be configured elsewhere)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    return hc.get("mode") == RunMode.MULTIRUN and Path(str(hc.runtime.get("output_dir"))) == run_dir


def is_requeued() -> bool:
    """SLURM sets SLURM_RESTART_COUNT >= 1 in a job it requeued (preemption, timeout via submitit)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) >= 1
    except ValueError:
        return False


def own_last(run_dir: Path | None) -> Path | None:
    """This run dir's own checkpoints/last.ckpt, if there is one."""
    if run_dir is None:
        return None
    path = run_dir / LAST
    return path if path.exists() else None


def requeued_checkpoint(run_dir: Path | None, requeued: bool | None = None) -> str | None:
    """Rule 1: the job's own last.ckpt when SLURM requeued it, else None."""
    if not (is_requeued() if requeued is None else requeued):
        return None
    own = own_last(run_dir)
    if own is not None:
        log.info("requeued job: resuming from its own %s", own)
    return str(own) if own is not None else None


def last_checkpoint(experiment_root: Path, run_dir: Path | None, multirun: bool) -> tuple[bool, str | None]:
    """Rule 3 (`ckpt_path=last`): (decided, path). decided=False: a single run found nothing (the caller errors)."""
    own = own_last(run_dir)
    if own is not None:
        return True, str(own)
    if multirun:
        log.info("ckpt_path=last: this sweep job has no checkpoint of its own yet; starting from step 0")
        return True, None
    found = sorted((experiment_root / "runs").glob(f"*/{LAST}"), key=lambda p: p.stat().st_mtime)
    return (True, str(found[-1])) if found else (False, None)


def resolve_ckpt_path(cfg: Mapping[str, Any]) -> str | None:
    """The checkpoint this run resumes from (rules in the module docstring), or None for a fresh start."""
    run_dir, multirun = run_dir_of(cfg)
    requeued = requeued_checkpoint(run_dir)
    if requeued is not None:
        return requeued
    value = cfg.get("ckpt_path")
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        root = Path(str(cfg["paths"]["log_dir"])) / str(cfg["experiment_name"])
        decided, found = last_checkpoint(root, run_dir, multirun)
        if not decided:
            raise ConfigError(f"ckpt_path=last found no {root / 'runs'}/*/checkpoints/last.ckpt; train with "
                              "callbacks.checkpoint.enabled=true first or give ckpt_path=<file.ckpt>")
        return found
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={value} is not a checkpoint file; give an existing .ckpt or ckpt_path=last")
    return str(path)
