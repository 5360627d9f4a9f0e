"""The command line as users meet it: multirun with W&B offline, overfit (bad inputs: tests/reliability)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MICRO, ROOT, run_in_process


def _train(args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "APEXLM_LOG_DIR": str(tmp_path / "logs"), "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          env=e, cwd=tmp_path, timeout=600)


BASE = ["experiment=full_it", "debug=fdr", *MICRO, "logger=none"]


def test_multirun_two_seeds_two_wandb_runs(tmp_path: Path) -> None:
    res = _train(["-m", *BASE, "logger=wandb", "seed=1,2"], tmp_path, env={"WANDB_MODE": "offline"})
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = sorted((tmp_path / "logs").rglob("summary.json"))
    assert len(summaries) == 2
    assert {json.loads(p.read_text())["seed"] for p in summaries} == {1, 2}
    wandb_runs = list((tmp_path / "logs").rglob("run-*.wandb"))
    assert len(wandb_runs) == 2


def test_overfit_one_batch(tmp_path: Path) -> None:
    run_in_process(["experiment=full_it", "debug=overfit", *MICRO, "logger=csv", f"paths.log_dir={tmp_path}"],
                   tmp_path / "run")
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= 40
    assert min(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])
