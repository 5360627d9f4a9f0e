"""Multi-node placement: trainer.num_nodes / devices from the SLURM launcher's nodes x GPUs per node."""

from __future__ import annotations

from pathlib import Path

from apexlm.training.setup import build_trainer_kwargs
from apexlm.training.strategy_check import processes
from tests.conftest import compose_cfg

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
