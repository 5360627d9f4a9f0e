"""eval.py: a run dir (its export and its own config), any HF model dir, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apexlm.eval.cli import eval_main, run_evaluation
from tests.support.micro_runs import micro_runs
from tests.support.runs import ROOT, compose_cfg

FAST = ["eval.max_ppl_batches=2", "eval.max_items_per_task=1", "eval.max_new_tokens=4", "threads=1",
        "eval.ppl_domains=[pycode]"]


def _cfg(tmp_path: Path, *overrides: str):
    return compose_cfg([*FAST, f"paths.log_dir={tmp_path}/logs", *overrides], tmp_path / "out", config_name="eval")


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_run_dir_uses_the_runs_config_and_never_overwrites(tmp_path: Path) -> None:
    run_dir = micro_runs()["full"]
    before = (run_dir / "eval.json").read_text()
    results, target, source = run_evaluation(_cfg(tmp_path, f"run_dir={run_dir}"))
    assert target == run_dir and source.endswith("export")
    assert (run_dir / "eval.json").read_text() == before               # the training-time eval is kept
    again = sorted(run_dir.glob("eval-*.json"))
    assert again and json.loads(again[-1].read_text())["ppl/val"] == pytest.approx(results["ppl/val"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert results["ppl/val"] == pytest.approx(summary["final_val_ppl"], rel=1e-4)   # its own val data
    assert "exact_match" in results and "ppl/pycode" in results


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_any_hf_model_dir(tmp_path: Path) -> None:
    export = micro_runs()["apex"] / "export"
    results, target, _ = run_evaluation(_cfg(tmp_path, f"model.pretrained={export}"))
    assert target == tmp_path / "out" and (target / "eval.json").is_file()
    assert "ppl/pycode" in results and "ppl/val" not in results        # no run: no run val split
    assert any("ppl/val skipped" in n for n in results["notes"])


@pytest.mark.parametrize("overrides,message", [
    (["run_dir=/nonexistent/run"], "does not exist"),
    (["model.pretrained=/nonexistent/model"], "does not exist"),
    ([], "nothing to evaluate"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             overrides: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        eval_main(_cfg(tmp_path, *overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_run_dir_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(SystemExit):
        eval_main(_cfg(tmp_path, f"run_dir={tmp_path / 'not_a_run'}"))
    assert ".hydra/config.yaml" in capsys.readouterr().err


@pytest.mark.slow  # a fresh `python eval.py` process
def test_cli_process_exit_status(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "eval.py"), "run_dir=/nonexistent/run",
                           f"paths.log_dir={tmp_path}"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run_dir=/nonexistent/run does not exist")
