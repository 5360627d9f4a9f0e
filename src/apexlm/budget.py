"""Trainable-parameter budget of a method on a model, without allocating weights (meta device).

    python -m apexlm.budget model=llama2_7b method=apex [method.k_ratio=0.125 ...]

Prints a small table and ends with `trainable_fraction=<float>`. Uses the same config groups and the same
`Method.prepare` as training, so the number is the one a real run would log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from apexlm.errors import UserError
from apexlm.methods import build_method
from apexlm.methods.base import count_params
from apexlm.models.builders import TINY_KEYS, check_supported

ROOT = Path(__file__).resolve().parents[2]


def arch_config(model_cfg: DictConfig, vocab_size: int = 8192) -> PretrainedConfig:
    """The architecture of a `model` config: its `arch` block, the tiny sizes, or a local dir's config.json."""
    if model_cfg.get("arch"):
        arch = OmegaConf.to_container(model_cfg.arch, resolve=True)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    if model_cfg.get("kind") == "tiny":
        kw = {k: model_cfg[k] for k in TINY_KEYS if model_cfg.get(k) is not None}
        return AutoConfig.for_model("llama", vocab_size=vocab_size, **kw)
    if model_cfg.get("pretrained"):
        return AutoConfig.from_pretrained(str(model_cfg.pretrained))
    raise UserError("this model config has no `arch` block and no model.pretrained to read a config from")


def budget(cfg: DictConfig) -> dict[str, Any]:
    config = arch_config(cfg.model)
    check_supported(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base_total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    method = build_method(cfg.method, seed=int(cfg.get("seed", 0)))
    model = method.prepare(model, assess_batches=None)
    trainable, total = count_params(model)
    return {"method": str(cfg.method.name), "model_params": base_total, "trainable_params": trainable,
            "total_params_with_operators": total, "trainable_fraction": trainable / base_total}


def main(argv: list[str]) -> int:
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("APEXLM_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=argv)
    try:
        res = budget(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'method':<28}{res['method']}")
    print(f"{'model parameters':<28}{res['model_params']:,}")
    print(f"{'trainable parameters':<28}{res['trainable_params']:,}")
    print(f"{'with operators (total)':<28}{res['total_params_with_operators']:,}")
    print(f"trainable_fraction={res['trainable_fraction']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
