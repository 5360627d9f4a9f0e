"""A non-finite loss or gradient stops the run with one line before the update (or skips that step), and no
checkpoint with non-finite weights is ever written."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

import apexlm.models.module as module_mod
from apexlm.callbacks.guard import NonFiniteError, param_fingerprint
from apexlm.training.checkpoint_io import AtomicCheckpointIO, nonfinite_tensors
from tests.support.loop import loss_of
from tests.support.models import batches
from tests.support.runs import MICRO, cli_many, error_lines, fit

RUN = ["experiment=full_it", "debug=fdr", *MICRO, "threads=1", "logger=csv", "trainer.limit_val_batches=0",
       "callbacks.checkpoint.enabled=true", "callbacks.checkpoint.every_n_steps=1"]
BAD_STEP = 3


@pytest.fixture
def nan_loss_at_step_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loss of the 3rd optimizer step is NaN (validation is off in these runs)."""
    calls = {"n": 0}
    real = module_mod.token_loss_sum

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, count = real(logits, labels)
        calls["n"] += 1
        return (total * float("nan"), count) if calls["n"] == BAD_STEP else (total, count)

    monkeypatch.setattr(module_mod, "token_loss_sum", loss)


class Snapshots(L.Callback):
    def __init__(self) -> None:
        self.after_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.after_step[trainer.global_step] = param_fingerprint(pl_module)


def test_nan_loss_stops_before_the_update(tmp_path: Path, nan_loss_at_step_3: None) -> None:
    with pytest.raises(NonFiniteError, match=f"non-finite loss .* at optimizer step {BAD_STEP}") as info:
        fit([*RUN, f"paths.log_dir={tmp_path}/logs"], tmp_path / "run")
    assert "\n" not in str(info.value) and "callbacks.guard.on_nonfinite=skip" in str(info.value)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == BAD_STEP - 1 and not nonfinite_tensors(ckpt["state_dict"])
    assert not (tmp_path / "run" / "summary.json").exists()


def test_skip_mode_drops_only_the_bad_step(tmp_path: Path, nan_loss_at_step_3: None) -> None:
    snaps = Snapshots()
    summary, module = fit([*RUN, f"paths.log_dir={tmp_path}/logs", "callbacks.guard.on_nonfinite=skip"],
                          tmp_path / "run", snaps)
    assert summary["optimizer_steps"] == 4 and summary["final_val_loss"] is None  # validation is off here
    fp = snaps.after_step
    assert fp[BAD_STEP] == fp[BAD_STEP - 1]  # the bad step left every weight untouched
    assert fp[BAD_STEP + 1] != fp[BAD_STEP] and fp[BAD_STEP - 1] != fp[BAD_STEP - 2]
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    assert math.isfinite(loss_of(module.model.eval(), batches(1)[0]).item())  # and it still predicts
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["NumericalGuard"]["skipped"] == 1


@pytest.mark.slow  # a forked `python train.py` run
def test_diverging_lr_through_the_cli(tmp_path: Path) -> None:
    """lr=1e30: the first update is finite but huge, the next loss is not; the CLI prints one line, exits 2."""
    (res,) = cli_many([[*RUN, "optim.lr=1e30", "optim.warmup_ratio=0.0"]], [tmp_path])
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "non-finite" in lines[0], res.stderr[-3000:]
    (ckpt_path,) = list((tmp_path / "logs").rglob("last.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert not nonfinite_tensors(ckpt["state_dict"])
    assert not list((tmp_path / "logs").rglob("summary.json"))


def test_checkpoint_with_nonfinite_weights_is_refused(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, path)
    with pytest.raises(NonFiniteError, match="non-finite weights"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("inf")])}, "global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_fingerprint_sees_permutations() -> None:
    lin = torch.nn.Linear(4, 3)
    before = param_fingerprint(lin)
    with torch.no_grad():
        lin.weight.copy_(lin.weight[[1, 0, 2]])
    assert param_fingerprint(lin) != before
