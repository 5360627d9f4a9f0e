"""Two micro training runs (full_cpt and apex_cpt, debug=fdr, exported, evaluated, with analytics) made once
per test session and shared by tests/eval and tests/analysis."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from tests.support.runs import MICRO, compose_cfg, run_in_process

# Cheap evaluation at the end of each run (still every part: ppl, exact match, MC, analytics). One domain batch
# while the trainer validates on 2: ppl/val must still read 2 (the trainer's limit, not max_ppl_batches).
EVAL_FAST = ["eval.enabled=true", "eval.analytics=true", "eval.max_ppl_batches=1", "eval.max_items_per_task=2",
             "eval.max_new_tokens=6", "eval.ppl_domains=[shakespeare]"]
EXPERIMENTS = {"full": "full_cpt", "apex": "apex_cpt"}


def overrides(name: str, root: Path) -> list[str]:
    """The train overrides of run `name` (threads=1: far faster than 2 on a busy 2-core machine)."""
    harness = ["eval.harness.tasks=[apexlm_mc_syllogism]"] if name == "full" else []   # lm-eval at the end too
    return [f"experiment={EXPERIMENTS[name]}", "debug=fdr", *MICRO, "threads=1", "export=true", "logger=csv",
            f"paths.log_dir={root}/logs", *EVAL_FAST, *harness]


@functools.cache
def micro_runs() -> dict[str, Path]:
    """{"full": run dir, "apex": run dir}; each also gets .hydra/config.yaml as train.py would write it."""
    root = Path(tempfile.mkdtemp(prefix="apexlm-eval-runs-"))
    atexit.register(shutil.rmtree, root, True)
    dirs = {}
    for name in EXPERIMENTS:  # eval.analytics=true: the pipeline adds the AnalyticsCallback itself
        run_dir = root / name
        run_in_process(overrides(name, root), run_dir)
        cfg = compose_cfg(overrides(name, root), run_dir)
        (run_dir / ".hydra").mkdir(exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        dirs[name] = run_dir
    return dirs
