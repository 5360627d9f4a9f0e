"""A real (micro) study end to end: `train.py -m` on the mixer-LR study narrowed to the two controls and one APEX
arm x 2 seeds, then the report on its multirun dir prints deltas against both controls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runs import MICRO, ROOT

STUDY = "apex_mixer_lr_sweep_it"


@pytest.mark.slow
def test_micro_study_and_report(tmp_path: Path) -> None:
    env = {**os.environ, "APEXLM_LOG_DIR": str(tmp_path / "logs"), "WANDB_MODE": "disabled",
           "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "train.py", "-m", f"hparams_search={STUDY}",
           "+hparams_search/mixer_arm=full_it,full_restart_it,x30_restart", "seed=1,2",
           "debug=fdr", *(o for o in MICRO if not o.startswith("threads=")), "threads=1", "logger=csv",
           "data.max_val_samples=8", "trainer.limit_val_batches=1", "method.assess_samples=4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / STUDY / "multiruns").iterdir())
    assert len(sweeps) == 1  # one multirun dir holds every arm
    sweep = sweeps[0]
    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 6 and not list(sweep.rglob("failed.json"))
    assert {json.loads(p.read_text())["experiment"] for p in summaries} == {STUDY}

    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "apexlm.analysis.report.sweep", str(sweep), "--out", str(out),
                          "--baseline", "full_it", "--controls", "full_it,full_restart_it"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-3000:]
    arm = "apex_it mixer_arm=x30_restart"
    for control in ("full_it", "full_restart_it"):
        assert f"### final val ppl: variant − `{control}`" in rep.stdout
    assert f"| {arm} | 2 | 1,2 |" in rep.stdout
    data = json.loads((out / "report.json").read_text())
    assert set(data["variants"]) == {"full_it", "full_restart_it", arm}
    for control in ("full_it", "full_restart_it"):
        d = data["deltas"]["final_val_ppl"][control][arm]
        assert d["delta"] is not None and set(d["pairs"]) == {"1", "2"}
    assert data["reach"][arm]["target"] is not None
    for png in ("final_ppl.png", "val_ppl_vs_tokens.png"):
        assert (out / png).stat().st_size > 1000
