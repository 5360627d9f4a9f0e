"""Every experiment runs end to end (debug=fdr) on the micro model and leaves a complete summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CONFIG_DIR, MICRO, run_in_process

ALL = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
# One-knob ablations of apex_it: each knob is unit-tested in tests/apex and every file composes
# (tests/test_configs.py); these run end to end as well, one per pipeline-level code path.
PIPELINE_ABLATIONS = {"apex_it_selection_random", "apex_it_operator_dense", "apex_it_stages_3",
                      "apex_it_scoring_ma_rank", "apex_it_stage_lr_continue", "apex_it_mixer_lr_scale_30"}
EXPERIMENTS = [e for e in ALL if not e.startswith("apex_it_") or e in PIPELINE_ABLATIONS]
FIELDS = ("method", "experiment", "seed", "total_params", "trainable_params", "tokens_seen", "train_time_s",
          "tokens_per_s", "peak_mem_mb", "final_val_loss", "final_val_ppl", "stages_completed",
          "trainable_fraction")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fdr(experiment: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [f"experiment={experiment}", "debug=fdr", *MICRO, f"paths.log_dir={tmp_path}", "logger=csv",
                 "export_to=null"]
    summary = run_in_process(overrides, run_dir)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in FIELDS:
        assert key in on_disk and on_disk[key] is not None, key
    assert on_disk == json.loads(json.dumps(summary, default=str)) or on_disk["method"] == summary["method"]
    assert on_disk["tokens_seen"] > 0 and on_disk["optimizer_steps"] == 4
    assert (run_dir / "csv" / "metrics.csv").exists()
