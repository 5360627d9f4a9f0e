"""The command line as users meet it: one-line errors with exit 2, multirun with W&B offline, overfit."""

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


def _assert_one_line_error(res: subprocess.CompletedProcess, phrase: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and phrase in errors[0], res.stderr[-2000:]


BASE = ["experiment=full_it", "debug=fdr", *MICRO, "logger=none"]


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    bad_jsonl = tmp / "bad.jsonl"
    bad_jsonl.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                         "{not json\n")
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    return [
        (["data=text_files", f"data.path={tmp}/nope"], "nope"),
        (["data=jsonl_messages", f"data.path={bad_jsonl}"], "bad.jsonl:2"),
        (["data=jsonl_messages", f"data.path={empty}"], "empty"),
        (["model=hf", f"model.pretrained={tmp}/missing_model"], "does not exist"),
        (["method=apex", "method.k_ratio=0.7"], "k_ratio"),
        (["method=apex", "method.tuned_ffn_ratio=0.2"], "tuned_ffn_ratio"),
        (["method=apex", "method.stages=9"], "stages"),
        (["method=apex", "method.operator=fft"], "operator"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_stops_with_one_line(case: int, tmp_path: Path) -> None:
    args, phrase = _bad_inputs(tmp_path)[case]
    res = _train([*BASE, *args], tmp_path)
    _assert_one_line_error(res, phrase)
    assert not list((tmp_path / "logs").rglob("summary.json"))


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
