"""FSDP2 (`trainer=fsdp`, 2 gloo processes) trains and exports exactly like DDP, for every method family, and
resumes exactly from a sharded checkpoint taken after the first stage boundary (mid-stage).

Both strategies see the same examples per step (ResumableSampler: rank r takes the r-th block of every global
batch) and average the same gradients; APEX transitions run layer by layer on gathered shards. The exports
(plain HF safetensors, written by rank 0 from gathered shards) must agree to 1e-4 relative (max |diff| over
max |w| per tensor; measured ~2e-5, the rest is reduction order). One module-scoped pair of processes trains
all 16 runs (`fsdp_runs`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.reliability.fsdp_runs import EXPERIMENTS, KILL_STEP, run_all

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_all(tmp_path_factory.mktemp("fsdp"))


def _export(runs: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(runs / name / "export" / "model.safetensors"))


def _summary(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "summary.json").read_text())


def _max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in a)


@pytest.mark.parametrize("exp", list(EXPERIMENTS))
def test_fsdp_export_equals_ddp(runs: Path, exp: str) -> None:
    fsdp, ddp = _summary(runs, f"{exp}_fsdp"), _summary(runs, f"{exp}_ddp")
    assert fsdp["stages_completed"] == ddp["stages_completed"] == 3
    assert fsdp["optimizer_steps"] == ddp["optimizer_steps"] == 6
    if ddp.get("final_val_loss") is not None:                      # apex_it validates mid-training too
        assert abs(fsdp["final_val_loss"] - ddp["final_val_loss"]) <= 1e-4 * abs(ddp["final_val_loss"])
    rel = _max_rel(_export(runs, f"{exp}_fsdp"), _export(runs, f"{exp}_ddp"))
    print(f"{exp}: FSDP vs DDP export, max rel {rel:.2e}")    # shown with pytest -rP (docs/results.md)
    assert rel <= 1e-4


def test_fsdp_export_loads_in_vanilla_transformers(runs: Path) -> None:
    from transformers import AutoModelForCausalLM

    for exp in ("apex_cpt", "lora_it"):
        path = runs / f"{exp}_fsdp" / "export"
        model = AutoModelForCausalLM.from_pretrained(str(path))
        saved = _export(runs, f"{exp}_fsdp")
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
        ids = torch.randint(0, model.config.vocab_size, (1, 8))
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_fsdp_resume_from_sharded_checkpoint_equals_uninterrupted(runs: Path) -> None:
    ckpt = runs / "killed" / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file()          # a distributed-checkpoint folder
    meta = torch.load(ckpt / "meta.pt", weights_only=False)
    assert meta["global_step"] == KILL_STEP - 1                     # mid-stage 2, the step before the kill
    assert len(meta["apexlm_method"]["apex"]["recorders"]) == 2     # both ranks' partial scores
    assert not (runs / "killed" / "summary.json").exists()
    resumed, whole = _summary(runs, "resumed"), _summary(runs, "apex_cpt_fsdp")
    assert resumed["stages_completed"] == whole["stages_completed"] == 3
    rel = _max_rel(_export(runs, "resumed"), _export(runs, "apex_cpt_fsdp"))
    print(f"resumed vs uninterrupted export, max rel {rel:.2e}")
    assert rel <= 1e-6


def test_eval_rebuilds_the_export_from_a_sharded_checkpoint(runs: Path) -> None:
    """eval.py's checkpoint path reads the distributed-checkpoint folder in one process (no process group)."""
    from apexlm.eval.checkpoint import model_from_checkpoint
    from apexlm.models.tokenizer import load_run_tokenizer
    from tests.reliability.fsdp_runs import CKPT, COMMON, STRATEGIES
    from tests.support.runs import compose_cfg

    cfg = compose_cfg([*COMMON, *EXPERIMENTS["apex_cpt"], *STRATEGIES["fsdp"], *CKPT,
                       f"paths.log_dir={runs}/eval_logs"], runs / "eval")
    ckpt = runs / "resumed" / "checkpoints" / "last.ckpt"          # the final step, sharded
    model = model_from_checkpoint(cfg, ckpt, load_run_tokenizer(cfg))
    state = {k: v for k, v in model.state_dict().items()}
    export = _export(runs, "resumed")
    assert _max_rel({k: state[k] for k in export}, export) <= 1e-6


def test_ddp_resume_mid_stage_equals_uninterrupted(runs: Path) -> None:
    """The per-rank partial scores matter for DDP too (the checkpoint is one file written by rank 0)."""
    assert (runs / "killed_ddp" / "checkpoints" / "last.ckpt").is_file()
    rel = _max_rel(_export(runs, "resumed_ddp"), _export(runs, "apex_cpt_ddp"))
    print(f"DDP resumed vs uninterrupted export, max rel {rel:.2e}")
    assert rel <= 1e-6
