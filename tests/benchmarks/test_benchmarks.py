"""The benchmark scripts run end to end on CPU at the micro size (no timing assertions: timings live in the benchmark tables).

One thread everywhere, so a busy 2-core machine does not stall the OpenMP pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_span_micro_prints_every_comparison() -> None:
    proc = _run([sys.executable, str(BENCH / "span_micro.py"), "--reps", "1"])
    rows = [line for line in proc.stdout.splitlines() if " ms / " in line]
    assert proc.returncode == 0 and len(rows) == 7
    assert all(float(line.rsplit("=", 1)[1]) > 0 for line in rows)
