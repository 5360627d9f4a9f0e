"""The benchmark scripts run end to end on CPU at the micro size (no timing assertions: timings live in the benchmark tables).

One thread everywhere, so a busy 2-core machine does not stall the OpenMP pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.runs import ROOT

pytestmark = pytest.mark.slow  # the benchmark scripts as subprocesses

BENCH = ROOT / "benchmarks"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _run(args: list[str], timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu_data")
    _run([sys.executable, str(BENCH / "pack_gpu_data.py"), "--out", str(out), "--max-tokens", "20000"])
    return out


def test_pack_gpu_data_writes_uint16_streams_and_tokenizer(gpu_data: Path) -> None:
    meta = json.loads((gpu_data / "meta.json").read_text())
    assert set(meta["tokens"]) == {f"{d}_{s}" for d in ("shakespeare", "pycode") for s in ("train", "val")}
    for name, n in meta["tokens"].items():
        arr = np.load(gpu_data / f"{name}.npy")
        assert arr.dtype == np.uint16 and len(arr) == n <= 20000
        assert int(arr.max()) < meta["vocab_size"]
    assert (gpu_data / "tokenizer" / "tokenizer.json").is_file()


def test_gpu_check_dry_run_runs_every_stage(gpu_data: Path, tmp_path: Path) -> None:
    proc = _run(["bash", str(BENCH / "gpu_check.sh"), "--dry-run"], timeout=150, OUT=str(tmp_path),
                GPU_DATA_DIR=str(gpu_data), PYTHON=sys.executable)
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["dry_run"] and res["errors"] == {} and res["data"]["kind"] == "packed"
    stages = res["stages"]
    assert {"pretrain", "overhead_micro", *(f"cpt_{v}_seed0" for v in ("vanilla", "apex_mls1", "apex_mls30"))} \
        <= set(stages)
    for name, run in stages.items():
        if name.startswith("cpt_"):
            assert run["val_ppl_fused"] == pytest.approx(run["val_ppl"], rel=1e-4)   # fuse preserves function
            assert len(run["curve"]) >= 3
    assert stages["cpt_apex_mls1_seed0"]["boundaries"]                           # 3 stages → 2 boundaries
    assert stages["cpt_apex_mls30_seed0"]["mixer_lr_scale"] == 30.0
    assert "apex_mls1" in res["cpt_summary"] and "gpu_check summary" in proc.stdout


def test_bench_overhead_quick_micro(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = _run([sys.executable, str(BENCH / "bench_overhead.py"), "--quick", "--shape", "micro", "--steps", "3",
                 "--threads", "1", "--json", str(out)])
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("apex_overhead_ratio=") and float(last.split("=", 1)[1]) > 0
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"full", "apex_it", "apex_cpt", "s2", "lora", "full_aa"}
    assert res["methods"]["apex_cpt"]["trainable_fraction"] >= 1.0 > res["methods"]["apex_it"]["trainable_fraction"]
    assert res["fused"]["wrappers_left"] == 0 and res["fused"]["max_abs_diff"] < 1e-4
    assert res["restage"]["apex_it"]["stage"] == 3 and res["hooks"]["ratio"] > 0
    assert "machine:" in proc.stdout


def test_bench_pipeline_loops_agree(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    _run([sys.executable, str(BENCH / "bench_pipeline.py"), "--shape", "micro", "--data", "synthetic", "--steps", "4",
          "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["ratio"] > 0 and res["max_abs_loss_diff"] < 1e-4   # same init, batches, optimizer, schedule


def test_bench_memory_prints_plan_over_measured() -> None:
    """One micro run through the CLI (fresh child process); the ratio itself is checked in test_memory_plan."""
    proc = _run([sys.executable, str(BENCH / "bench_memory.py"), "--shapes", "micro", "--methods", "full",
                 "--steps", "2"])
    ratio = [line for line in proc.stdout.splitlines() if line.startswith("mem_ratio[micro/full]=")]
    assert len(ratio) == 1 and 0.5 < float(ratio[0].split("=")[1]) < 2.0, proc.stdout
