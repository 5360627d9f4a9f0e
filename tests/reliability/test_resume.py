"""Resume is exact: a run killed at any step and resumed from its last checkpoint ends with the same weights
as the uninterrupted run (CPU, same seed), across an epoch end and an APEX stage boundary."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from apexlm.data.resumable import ResumableLoader, ResumableSampler
from apexlm.errors import ConfigError
from apexlm.training.checkpoint_io import AtomicCheckpointIO
from apexlm.training.find_checkpoint import resolve_ckpt_path
from apexlm.training.rng_state import RngStateCallback
from tests.support.runs import MICRO, assert_same_weights, fit, weights

pytestmark = pytest.mark.slow  # a reference run plus a killed and a resumed run per case

# A short APEX run that crosses an epoch (16 examples / batch 4 = 4 steps per epoch) and a stage boundary
# (6 steps, 2 stages: boundary after step 3), with a checkpoint after every optimizer step.
RESUME = ["experiment=apex_it", "debug=fdr", *MICRO, "logger=csv", "trainer.max_steps=6", "method.stages=2",
          "data.max_train_samples=16", "trainer.limit_val_batches=0", "callbacks.checkpoint.enabled=true",
          "callbacks.checkpoint.every_n_steps=1", "method.assess_samples=8", "threads=1"]
BOUNDARY = 3  # 6 steps, 2 stages; 2 optimizer steps per epoch


class Killed(RuntimeError):
    """Stands for the process dying."""


class KillAt(L.Callback):
    """Raise in on_train_batch_end of optimizer step `step`: after the stage callback acted on that step and
    before ModelCheckpoint (Lightning runs checkpoint callbacks last) saved it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("resume")
    overrides = [*RESUME, f"paths.log_dir={tmp}/logs"]
    summary, module = fit(overrides, tmp / "full")
    assert summary["stage_boundaries"] == [BOUNDARY] and summary["stages_completed"] == 2
    return {"tmp": tmp, "overrides": overrides, "summary": summary, "weights": weights(module)}


@pytest.mark.parametrize("kill_at,why", [
    (2, "epoch end, mid-stage: the resumed run crosses the boundary itself"),
    (BOUNDARY, "after the boundary's transition, before its checkpoint: the transition is redone once"),
    (BOUNDARY + 1, "from the checkpoint written right after the transition, mid-epoch: nothing is redone"),
])
def test_killed_run_resumes_to_the_same_weights(kill_at: int, why: str, reference: dict) -> None:
    tmp, overrides = reference["tmp"], reference["overrides"]
    killed = tmp / f"killed{kill_at}"
    with pytest.raises(Killed):
        fit(overrides, killed, KillAt(kill_at))
    ckpt = killed / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)  # plain tensors and containers only
    assert state["global_step"] == kill_at - 1
    assert state["lr_schedulers"][0]["last_epoch"] == kill_at - 1  # LambdaLR position = optimizer steps
    done = [BOUNDARY] if kill_at - 1 >= BOUNDARY else []
    assert state["apexlm_method"]["stage"] == len(done)  # the one stage counter: the method's
    assert state["apexlm_method"]["apex"]["stage"] == len(done)
    saved_at = kill_at - 1  # data position: epoch and batches handed out in it (2 batches per epoch)
    position = [{"epoch": (saved_at - 1) // 2, "batches": (saved_at - 1) % 2 + 1}]
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == position

    resumed = tmp / f"resumed{kill_at}"
    summary, module = fit([*overrides, f"ckpt_path={ckpt}"], resumed)
    assert_same_weights(weights(module), reference["weights"])
    ref = reference["summary"]
    for key in ("optimizer_steps", "stages_completed", "tokens_seen", "stage_boundaries", "optimizer_resets"):
        assert summary[key] == ref[key], key
    transitions_here = sorted(p.name for p in (resumed / "stages").glob("*.json")) if (resumed / "stages").exists() \
        else []
    assert len(transitions_here) == (0 if done else 1), (why, transitions_here)
    assert not list(killed.rglob(".*.tmp-*")), "no temp file left behind"
    assert (killed / "checkpoints" / "last.ckpt").stat().st_size > 0


def test_resume_with_another_method_is_refused(reference: dict) -> None:
    ckpt = reference["tmp"] / f"killed{BOUNDARY}" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        pytest.skip("needs the checkpoint of the kill test")
    overrides = [o for o in reference["overrides"] if not o.startswith("experiment=")] + \
        ["experiment=full_it", f"ckpt_path={ckpt}"]
    with pytest.raises(ConfigError, match="method=apex"):
        fit(overrides, reference["tmp"] / "wrong_method")


def test_ckpt_path_last_is_the_newest_of_the_experiment(tmp_path: Path) -> None:
    cfg = {"paths": {"log_dir": str(tmp_path)}, "experiment_name": "exp", "ckpt_path": "last"}
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        resolve_ckpt_path(cfg)
    paths = []
    for i, run in enumerate(["2024-01-02_00-00-00-000000", "2024-01-01_00-00-00-000000"]):
        p = tmp_path / "exp" / "runs" / run / "checkpoints" / "last.ckpt"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (time.time() + 10 * i, time.time() + 10 * i))
        paths.append(p)
    (tmp_path / "other" / "runs" / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "other" / "runs" / "r" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path(cfg) == str(paths[1])  # newest write wins, other experiments are ignored
    assert resolve_ckpt_path({**cfg, "ckpt_path": str(paths[0])}) == str(paths[0])
    assert resolve_ckpt_path({**cfg, "ckpt_path": None}) is None


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "ck" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    before = path.read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.ckpt"]


def test_sampler_blocks_and_skip() -> None:
    data = list(range(20))
    one = list(ResumableSampler(data, batch_size=4, seed=3, num_replicas=1, rank=0))
    r0 = list(ResumableSampler(data, batch_size=2, seed=3, num_replicas=2, rank=0))
    r1 = list(ResumableSampler(data, batch_size=2, seed=3, num_replicas=2, rank=1))
    for s in range(len(one) // 4):  # each global batch of 4 = rank 0's 2 + rank 1's 2
        assert one[4 * s:4 * s + 4] == r0[2 * s:2 * s + 2] + r1[2 * s:2 * s + 2]
    loader = ResumableLoader(data, batch_size=4, sampler=ResumableSampler(data, 4, seed=3, num_replicas=1, rank=0))
    loader.sampler.set_epoch(1)
    full = [b.tolist() for b in loader]
    loader.load_state_dict({"epoch": 1, "batches": 2})
    assert [b.tolist() for b in loader] == full[2:] and loader.state_dict() == {"epoch": 1, "batches": 5}
    loader.load_state_dict({"epoch": 1, "batches": 5})  # checkpoint at the epoch's last batch
    loader.sampler.set_epoch(2)
    assert len([b for b in loader]) == 5


def test_rng_state_is_restored() -> None:
    cb = RngStateCallback()
    torch.manual_seed(0)
    state = cb.state_dict()
    want = torch.rand(3)
    torch.manual_seed(123)
    cb.load_state_dict(state)
    cb.on_train_start(None, None)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), want)
