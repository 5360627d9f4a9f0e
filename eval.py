"""Evaluate a training run or any HF model.

    python eval.py run_dir=<train.py run dir>
    python eval.py model.pretrained=<HF model dir or hub id>
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("APEXLM_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from apexlm.eval.cli import eval_main

    eval_main(cfg)


if __name__ == "__main__":
    main()
