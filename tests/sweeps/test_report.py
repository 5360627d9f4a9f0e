"""The sweep report on a synthetic tree of runs: means, stds, deltas (pooled and paired), token ratios, failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from apexlm.analysis.report.collect import read_curve, split_override
from apexlm.analysis.report.stats import pooled_std, tokens_to_reach
from apexlm.analysis.report.sweep import build_report, main, split_names

COMMON = ["debug=fdr", "model.hidden_size=64"]  # shared by every run: must not show up in variant names


def _run(root: Path, num: int, arm: str, seed: int, ppl: float, curve: list[tuple[float, float]],
         experiment: str = "apex_it", extra: dict | None = None, failed: bool = False) -> Path:
    """One multirun job dir, laid out as Hydra + apexlm write it."""
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    overrides = ["hparams_search=apex_mixer_lr_sweep_it", f"+hparams_search/mixer_arm={arm}", f"seed={seed}",
                 *COMMON]
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"experiment_name": "study", "seed": seed}))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"experiment": experiment, "hparams_search": "study"}}}}))
    if failed:
        (d / "failed.json").write_text(json.dumps({"error": "boom\nmore", "kind": "RuntimeError"}))
        return d
    summary = {"method": "x", "experiment": "study", "seed": seed, "final_val_ppl": ppl,
               "final_val_loss": math.log(ppl), "tokens_seen": 1000, "train_time_s": 2.0,
               "trainable_fraction": 0.5, "eval/exact_match": ppl / 100,
               "eval/exact_match/syllogism": ppl / 50, "eval/items/syllogism": 20, "eval/time_s/total": 1.5,
               **(extra or {})}
    (d / "summary.json").write_text(json.dumps(summary))
    lines = ["step,train/loss,val/loss,val/ppl,val/tokens_seen"]
    for i, (tok, p) in enumerate(curve):
        lines += [f"{i},3.0,,,", f"{i},,{math.log(p)},{p},{tok}"]
    (d / "csv").mkdir()
    (d / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    flat = [(1000, 1.0)]
    _run(root, 0, "full_it", 1, 10.0, [(500, 15.0), (1000, 10.0)], experiment="full_it")
    _run(root, 1, "full_it", 2, 12.0, [(500, 15.0), (1000, 12.0)], experiment="full_it")
    _run(root, 2, "full_it", 3, 14.0, [(500, 15.0), (1000, 14.0)], experiment="full_it")
    for i, (seed, ppl) in enumerate([(1, 9.0), (2, 11.0), (3, 13.0)]):
        _run(root, 3 + i, "full_restart_it", seed, ppl, flat, experiment="full_restart_it")
    # APEX arm, seeds 1 and 2 (seed 3 failed); 100 assessment tokens shift its token axis.
    _run(root, 6, "x30_restart", 1, 8.0, [(250, 20.0), (500, 14.0), (750, 10.0), (1000, 8.0)],
         extra={"assess_tokens": 100})
    _run(root, 7, "x30_restart", 2, 10.0, [(250, 20.0), (500, 16.0), (750, 13.0), (1000, 10.0)],
         extra={"assess_tokens": 100})
    _run(root, 8, "x30_restart", 3, 0.0, [], failed=True)
    _run(root, 9, "x1_restart", 1, 20.0, [(500, 30.0), (1000, 20.0)])  # never reaches the target
    return root


def test_report_numbers(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rep = build_report(tree, out, baseline="full_it", controls=["full_it", "full_restart_it"])
    apex = "apex_it mixer_arm=x30_restart"
    assert rep.order == ["full_it", "full_restart_it", "apex_it mixer_arm=x1_restart", apex]
    data = json.loads((out / "report.json").read_text())
    full = data["variants"]["full_it"]["stats"]["final_val_ppl"]
    assert full["mean"] == pytest.approx(12.0) and full["std"] == pytest.approx(2.0) and full["n"] == 3
    arm = data["variants"][apex]["stats"]
    assert arm["final_val_ppl"]["mean"] == pytest.approx(9.0)
    assert arm["final_val_ppl"]["std"] == pytest.approx(math.sqrt(2.0))
    assert arm["tokens"]["mean"] == pytest.approx(1100)  # tokens_seen + assessment pass
    assert arm["eval/exact_match"]["mean"] == pytest.approx(0.09)

    d_full = rep.deltas["final_val_ppl"]["full_it"][apex]
    assert d_full.delta == pytest.approx(-3.0)
    assert d_full.pooled_std == pytest.approx(math.sqrt((2 * 4.0 + 1 * 2.0) / 3))
    assert d_full.pairs == {1: pytest.approx(-2.0), 2: pytest.approx(-2.0)}
    assert d_full.paired == pytest.approx(-2.0) and d_full.paired_std == pytest.approx(0.0)
    d_restart = rep.deltas["final_val_ppl"]["full_restart_it"][apex]
    assert d_restart.delta == pytest.approx(-2.0) and d_restart.paired == pytest.approx(-1.0)
    assert "full_it" not in rep.deltas["final_val_ppl"]["full_it"]  # a control is not compared with itself

    r = rep.reach[apex]
    assert r.target == pytest.approx(12.0) and r.control_tokens == pytest.approx(1000)
    # seed 1: between (600, 14) and (850, 10) -> 725; seed 2: between (850, 13) and (1100, 10) -> 933.3
    assert sorted(r.reached) == [pytest.approx(725.0), pytest.approx(850 + 250 / 3)]
    assert r.ratio == pytest.approx((725.0 + 850 + 250 / 3) / 2 / 1000)
    assert r.step_ratio == pytest.approx((625.0 + 750 + 250 / 3) / 2 / 1000)  # 100 assessment tokens out
    assert data["reach"][apex]["step_ratio"] == pytest.approx(r.step_ratio)
    assert rep.reach["apex_it mixer_arm=x1_restart"].reached == []

    assert [f.variant for f in rep.failures] == [apex] and rep.failures[0].seed == 3
    md = (out / "report.md").read_text()
    assert "model.hidden_size" not in md and "debug=fdr" not in md
    assert "−3" not in md and "-3" in md  # plain ASCII signs in numbers
    assert "variant − `full_restart_it`" in md and "not reached" in md and "boom" in md
    # headline eval metrics in the tables; per-task scores in their own table; counts/timings only in JSON
    assert "## Exact match per task" in md and "| syllogism |" in md and "eval/items" not in md
    assert "eval/time_s" not in md and arm["eval/items/syllogism"]["mean"] == pytest.approx(20)
    for png in ("final_ppl.png", "val_ppl_vs_tokens.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_defaults_and_errors(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tree)]) == 0  # default controls: the full_* present; baseline: the plain one
    printed = capsys.readouterr().out
    assert "Plain control (baseline): `full_it`" in printed and "variant − `full_restart_it`" in printed
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert main([str(tree), "--controls", "apex_it   mixer_arm=x30_restart", "--out", str(tmp_path / "o")]) == 0
    assert "variant − `apex_it mixer_arm=x30_restart`" in capsys.readouterr().out  # spacing/order-insensitive
    assert main([str(tree), "--controls", "nope", "--out", str(tmp_path / "o")]) == 0
    assert "control `nope` has no finished run here" in capsys.readouterr().out


def test_helpers() -> None:
    assert tokens_to_reach([(1, 10.0), (2, 5.0)], 7.5) == pytest.approx(1.5)
    assert tokens_to_reach([(1, 4.0), (2, 3.0)], 7.5) == 1
    assert tokens_to_reach([(1, 10.0), (2, 9.0)], 7.5) is None
    assert math.isnan(pooled_std(float("nan"), 1, float("nan"), 1))
    assert pooled_std(2.0, 3, float("nan"), 1) == pytest.approx(2.0)
    assert split_names("a,b x=[1,2], c") == ["a", "b x=[1,2]", "c"]
    assert split_override("++method.k_ratio=0.1") == ("method.k_ratio", "0.1")


def test_curve_deduplicates_and_skips_train_rows(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "step,train/loss,val/ppl,val/tokens_seen\n0,3,,\n1,,9.0,100\n2,,8.0,200\n2,,8.0,200\n")
    assert read_curve(tmp_path, token_offset=10) == [(110.0, 9.0), (210.0, 8.0)]
