"""`benchmarks/gpu_check.sh --dry-run`: the GPU study's own command, on CPU with micro shapes, through train.py.

What it checks: every stage finishes (pretrain exports a base, the CPT multirun trains the four arms from it
through Hydra + Lightning, the sweep report and the overhead table are written), the arms read equal
optimizer-step tokens, and the summary JSON only reports what finished (a stage over the budget is skipped,
not faked). One thread per process; about 2 minutes on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARMS = {"full_cpt", "full_restart_cpt", "apex_cpt mixer_arm=x1_restart", "apex_cpt mixer_arm=x30_restart"}


def _run(args: list[str], timeout: int, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHON=sys.executable,
                PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), **env)
    proc = subprocess.run(args, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The carried data dir, packed from the prepared one (what the GPU machine gets)."""
    out = tmp_path_factory.mktemp("gpu_data")
    _run([sys.executable, str(ROOT / "benchmarks" / "pack_gpu_data.py"), "--out", str(out)], timeout=120)
    return out


def test_pack_gpu_data_copies_a_complete_data_dir(gpu_data: Path) -> None:
    from apexlm.data import manifest as mf

    assert mf.is_complete(gpu_data, mf.load(gpu_data))
    assert (gpu_data / "tokenizer" / "tokenizer.json").is_file()
    assert not (gpu_data / "raw").exists()
    assert sum(f.stat().st_size for f in gpu_data.rglob("*") if f.is_file()) < 40 * 2**20


@pytest.mark.slow
def test_gpu_check_dry_run_goes_through_train_py(gpu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], timeout=420, OUT=str(out),
                WORK=str(tmp_path / "work"), GPU_DATA_DIR=str(gpu_data))
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["dry_run"] and res["errors"] == []
    assert {k: v["rc"] for k, v in res["stages"].items()} == {"pretrain": "0", "cpt_s1": "0", "overhead_micro": "0",
                                                              "overhead_micro_compiled": "0"}
    assert res["pretrain"]["final_val_ppl"] > 0 and (tmp_path / "work" / "base" / "config.json").is_file()
    runs = [json.loads(p.read_text()) for p in sorted((out / "cpt" / "s1").glob("*/summary.json"))]
    hydra = sorted((out / "cpt" / "s1").glob("*/.hydra/config.yaml"))
    assert len(runs) == 4 and len(hydra) == 4                     # one Hydra job per arm, each kept
    assert len({r["tokens_seen"] for r in runs}) == 1            # equal optimizer-step tokens
    assert sorted(r["method"] for r in runs) == ["apex", "apex", "full", "full"]
    assert all(r.get("assess_tokens", 0) > 0 for r in runs if r["method"] == "apex")
    report = res["cpt_report"]
    assert set(report["variants"]) == ARMS and set(report["controls"]) == {"full_cpt", "full_restart_cpt"}
    assert set(report["deltas"]["final_val_ppl"]["full_restart_cpt"]) == ARMS - {"full_restart_cpt"}
    assert res["overhead"]["micro"]["methods"]["full"]
    compiled = res["overhead"]["micro_compiled"]
    assert compiled["compile"] == "aot_eager" and set(compiled["methods"]) == {"full", "apex_it", "apex_cpt", "s2"}
    assert "gpu_check summary" in proc.stdout and "Δ ppl" in proc.stdout


def test_gpu_check_skips_stages_past_the_budget(tmp_path: Path) -> None:
    """With no time left every stage is skipped and recorded as skipped; nothing is reported as measured."""
    out = tmp_path / "out"
    proc = _run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], timeout=120, OUT=str(out),
                WORK=str(tmp_path / "work"), TOTAL_S="1")
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["stages"] and all(s["rc"] == "skipped" for s in res["stages"].values())
    assert res["errors"] == [] and res["cpt_report"] is None and res["pretrain"]["final_val_ppl"] is None
    assert "skip pretrain" in proc.stdout
