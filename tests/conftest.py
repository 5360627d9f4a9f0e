"""Shared test helpers: compose the real Hydra configs and run them in-process on a micro model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
os.environ.setdefault("APEXLM_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

# The smallest model that still has GQA, several layers and an awkward FFN width.
MICRO = [
    "model.pretrained=null",
    "model.hidden_size=64",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=4",
    "model.num_key_value_heads=2",
    "model.intermediate_size=96",
    "model.max_position_embeddings=256",
    "data.block_size=64",
    "threads=2",
]


def compose_cfg(overrides: list[str], run_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """Compose like `train.py` would, with hydra.runtime.output_dir pointing at run_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    from apexlm.training.run import fit

    cfg = compose_cfg(overrides, run_dir)
    return fit(cfg, run_dir)[0]


@pytest.fixture
def micro_overrides(tmp_path: Path) -> list[str]:
    return [*MICRO, f"paths.log_dir={tmp_path}/logs", "logger=csv"]
