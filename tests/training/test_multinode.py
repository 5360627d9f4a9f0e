"""Multi-node placement: trainer.num_nodes / devices from the SLURM launcher's nodes x GPUs per node."""

from __future__ import annotations

from pathlib import Path

from apexlm.training.setup import build_trainer_kwargs
from apexlm.training.strategy_check import processes
from tests.support.runs import compose_cfg

BASE = ["experiment=full_it", "debug=fdr", "logger=none"]


def test_slurm_launcher_sets_nodes_and_gpus(tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_cfg([*BASE, "trainer=fsdp", "hydra/launcher=slurm", "hydra.launcher.nodes=2",
                       "hydra.launcher.gpus_per_node=4"], tmp_path)
    kw = build_trainer_kwargs(cfg, 10)
    assert (kw["num_nodes"], kw["devices"]) == (2, 4) and processes(cfg.trainer) == 8
    assert HydraConfig.get().launcher.tasks_per_node == 4  # one task per GPU


def test_without_slurm_defaults_hold(tmp_path: Path) -> None:
    kw = build_trainer_kwargs(compose_cfg([*BASE, "trainer=ddp"], tmp_path), 10)
    assert "num_nodes" not in kw and "devices" not in kw  # Lightning's defaults: 1 node, all visible devices
    kw = build_trainer_kwargs(compose_cfg([*BASE, "trainer.num_nodes=3"], tmp_path), 10)
    assert kw["num_nodes"] == 3


# ---- which checkpoint a (requeued) job resumes from (training/find_checkpoint.py) -------------------------
def _ckpt(run_dir: Path) -> Path:
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    return path


def test_sweep_job_takes_its_own_checkpoint_never_a_siblings(tmp_path: Path) -> None:
    from apexlm.training.find_checkpoint import last_checkpoint

    root = tmp_path / "exp"
    sweep = root / "multiruns" / "2026-01-01_00-00-00-000000"
    mine, sibling, fresh = sweep / "0", sweep / "1", sweep / "2"
    own = _ckpt(mine)
    _ckpt(sibling)
    _ckpt(root / "runs" / "older")
    assert last_checkpoint(root, run_dir=mine, multirun=True) == (True, str(own))
    assert last_checkpoint(root, run_dir=fresh, multirun=True) == (True, None)  # starts from step 0


def test_single_run_prefers_its_own_dir_then_the_newest_run(tmp_path: Path) -> None:
    import os

    from apexlm.training.find_checkpoint import last_checkpoint

    root = tmp_path / "exp"
    old, new = _ckpt(root / "runs" / "a"), _ckpt(root / "runs" / "b")
    os.utime(old, (1, 1))
    assert last_checkpoint(root, run_dir=root / "runs" / "a", multirun=False) == (True, str(old))
    assert last_checkpoint(root, run_dir=root / "runs" / "c", multirun=False) == (True, str(new))
    assert last_checkpoint(tmp_path / "none", run_dir=tmp_path / "x", multirun=False) == (False, None)


def test_requeued_job_resumes_from_its_own_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Through resolve_ckpt_path: SLURM_RESTART_COUNT>=1 + own last.ckpt wins over ckpt_path=<file>/null."""
    from apexlm.training.find_checkpoint import resolve_ckpt_path

    run_dir = tmp_path / "logs" / "multiruns" / "t" / "3"
    own = _ckpt(run_dir)
    other = _ckpt(tmp_path / "elsewhere")
    cfg = compose_cfg([*BASE, f"ckpt_path={other}"], run_dir)
    assert resolve_ckpt_path(cfg) == str(other)  # first launch: what the user asked for
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolve_ckpt_path(cfg) == str(own)  # requeued: its own progress
    assert resolve_ckpt_path(compose_cfg([*BASE, "ckpt_path=null"], run_dir)) == str(own)
    fresh = compose_cfg([*BASE, "ckpt_path=null"], tmp_path / "logs" / "multiruns" / "t" / "4")
    assert resolve_ckpt_path(fresh) is None  # requeued but nothing of its own: from step 0
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    _ckpt(tmp_path / "logs" / "exp" / "runs" / "single")
    sweep_job = compose_cfg([*BASE, "ckpt_path=last", "experiment_name=exp", f"paths.log_dir={tmp_path / 'logs'}"],
                            tmp_path / "logs" / "exp" / "multiruns" / "t" / "5")
    assert resolve_ckpt_path(sweep_job) is None  # a sweep job's dir is new: never another run's checkpoint
    assert resolve_ckpt_path({**dict(sweep_job), "paths": {"log_dir": str(tmp_path / "logs")}}) is not None
