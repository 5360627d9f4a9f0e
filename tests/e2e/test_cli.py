"""The command line as users meet it: multirun with W&B offline, overfit (bad inputs: tests/reliability)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.support.runs import MICRO, run_in_process, train_cli

pytestmark = pytest.mark.slow  # a multirun through `python train.py` and a 40-step overfit run

BASE = ["experiment=full_it", "debug=fdr", *MICRO, "logger=none"]


def test_multirun_two_seeds_two_wandb_runs(tmp_path: Path) -> None:
    res = train_cli(["-m", *BASE, "logger=wandb", "seed=1,2"], tmp_path, env={"WANDB_MODE": "offline"},
                    timeout=600)
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
