"""Train a causal LM with APEX or a baseline: `python train.py experiment=apex_it` (Hydra overrides welcome)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("APEXLM_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from apexlm.training.entry import train_main

    train_main(cfg)


if __name__ == "__main__":
    from apexlm.training.validate import check_overrides

    check_overrides(sys.argv[1:], str(Path(__file__).resolve().parent / "configs"))  # Hydra errors: one line
    main()
