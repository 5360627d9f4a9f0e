"""Two processes (DDP, gloo, CPU) train exactly like one process with the same global batch.

Each rank takes its own block of B examples of every global batch of 2B (ResumableSampler), so the 2-process
run sees, per optimizer step, the same two micro-batches as one process with batch B and
accumulate_grad_batches=2: the averaged gradient is the same, and so are the APEX scores, because rank scoring
counts top-k per forward and both runs make the same forwards (a single forward of 2B would rank over 2B
examples, a different statistic). Scores are all-reduced at the boundary; every rank must select the same
P/N/E (RankAgreementGuard compares parameter fingerprints after the transition, or the run fails).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.runs import MICRO, fit, train_cli, weights

COMMON = ["experiment=apex_it", "debug=fdr", *MICRO, "threads=1", "logger=csv", "trainer.max_steps=4",
          "method.stages=2", "trainer.limit_val_batches=0", "method.assess_samples=8", "data.batch_size=2",
          "data.max_train_samples=32"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "export=true"]


def _stage_record(run_dir: Path) -> dict:
    (path,) = list((run_dir / "stages").glob("*.json"))
    record = json.loads(path.read_text())
    record.pop("transition_s", None)
    record.pop("transition_time_s", None)
    return record


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    res = train_cli([*COMMON, *DDP], tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-4000:]
    (summary_path,) = list((tmp_path / "logs").rglob("summary.json"))
    ddp_dir = summary_path.parent
    ddp_summary = json.loads(summary_path.read_text())

    one_dir = tmp_path / "one"
    one_summary, module = fit([*COMMON, f"paths.log_dir={tmp_path}/one_logs", "trainer.accumulate_grad_batches=2"],
                              one_dir)
    for key in ("optimizer_steps", "stages_completed", "stage_boundaries"):
        assert ddp_summary[key] == one_summary[key], key
    assert ddp_summary["stages_completed"] == 2
    assert _stage_record(ddp_dir) == _stage_record(one_dir)  # same P/N overlap with stage 1 = same reselection

    with open(ddp_dir / "csv" / "metrics.csv") as f:  # RankAgreementGuard compared the ranks after the transition
        assert {r["stage/ranks_agree"] for r in csv.DictReader(f) if r.get("stage/ranks_agree")} == {"1.0"}

    want = weights(module)
    got = load_file(str(ddp_dir / "export" / "model.safetensors"))
    assert set(got) <= set(want) and len(got) >= len(want) - 1
    for k, v in got.items():
        torch.testing.assert_close(v, want[k], atol=2e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
