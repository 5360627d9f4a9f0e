"""Analytics outputs: the callback's snapshots during training, and the offline analysis of a finished model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from apexlm.analysis.offline import final_analysis
from apexlm.models.builders import build_model
from apexlm.models.tokenizer import load_run_tokenizer
from tests.support.micro_runs import micro_runs
from tests.support.runs import MICRO, compose_cfg


def _png_ok(path: Path) -> None:
    assert path.is_file()
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0.01   # a real, non-blank figure


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_apex_run_has_stage_snapshots_and_final() -> None:
    out = micro_runs()["apex"] / "analysis"
    base = json.loads((out / "base.json").read_text())
    assert set(base["activations"]) == {"attn", "ffn"} and set(base["erank"]) == {"v", "o", "gate", "up", "down"}
    stages = sorted(out.glob("stage*_step*.json"))
    assert len(stages) == 2                                        # apex_cpt: 3 stages → 2 boundaries
    for path in stages:
        rec = json.loads(path.read_text())
        assert rec["overlap"]["p_ffn"]["mean"] is not None and 0.0 <= rec["overlap"]["n_ffn"]["mean"] <= 1.0
        assert sum(rec["scores"]["ffn"]["counts"]) == 2 * 96      # every FFN channel of both layers
        assert rec["delta_erank_mean"] and rec["delta_note"] is None
        _png_ok(out / f"scores_{rec['tag']}.png")
    final = json.loads((out / "final.json").read_text())
    assert all(v > 1.0 for v in final["delta_erank_mean"].values())   # mapped through Apex.unit_ids
    for name in ("activations_final.png", "erank_final.png", "erank_evolution.png", "jaccard.png"):
        _png_ok(out / name)
    summary = json.loads((micro_runs()["apex"] / "summary.json").read_text())
    assert "eval/erank/v" in summary and "eval/act_std/ffn" in summary


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_full_run_final_analysis() -> None:
    out = micro_runs()["full"] / "analysis"
    final = json.loads((out / "final.json").read_text())
    assert final["step"] == 4 and final["overlap"] is None and final["scores"] is None
    assert all(v > 0.0 for v in final["delta_erank_mean"].values())
    _png_ok(out / "activations_final.png")


@pytest.mark.parametrize("method", ["full", "apex"])
def test_offline_analysis_rebuilds_the_base(tmp_path: Path, method: str) -> None:
    """Without the callback: the base is rebuilt from the run config with the run's seed. An untrained model
    IS its base, so ΔW = 0 (erank 0) — for APEX, ΔW is skipped because the export loses the permutation."""
    cfg = compose_cfg(["experiment=full_cpt", f"method={method}", *MICRO, "eval.analytics=true",
                       f"paths.log_dir={tmp_path}"], tmp_path)
    tokenizer = load_run_tokenizer(cfg)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, tokenizer)
    batches = [{"input_ids": torch.randint(0, 500, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long)}]
    scalars = final_analysis(model, tokenizer, cfg, tmp_path, batches)
    final = json.loads((tmp_path / "analysis" / "final.json").read_text())
    if method == "full":
        assert all(scalars[f"delta_erank/{m}"] == 0.0 for m in ("v", "o", "gate", "up", "down"))
    else:
        assert final["delta_erank"] is None and "permut" in final["delta_note"]
    base = json.loads((tmp_path / "analysis" / "base.json").read_text())
    assert base["activations"]["ffn"]["std"] == pytest.approx(final["activations"]["ffn"]["std"])
