"""`build_method` returns each baseline by name, and every method config composes with the shared keys."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from apexlm.methods import build_method
from apexlm.methods.gmt import GmtMethod
from apexlm.methods.hft import HftMethod
from apexlm.methods.peft_adapters import PeftAdapterMethod
from tests.support.runs import compose_cfg

CLASSES = {"lora": PeftAdapterMethod, "dora": PeftAdapterMethod, "pissa": PeftAdapterMethod,
           "hft": HftMethod, "gmt": GmtMethod}
STAGE_KEYS = ("name", "stages", "stage_steps", "stage_lr", "stage_optimizer_reset")


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_build_from_composed_config(name: str, tmp_path) -> None:
    cfg = compose_cfg([f"method={name}"], run_dir=tmp_path)
    assert all(k in cfg.method for k in STAGE_KEYS)
    method = build_method(cfg.method, seed=1)
    assert type(method) is CLASSES[name] and method.name == name
    plain = build_method(OmegaConf.to_container(cfg.method), seed=1)
    assert type(plain) is CLASSES[name]


def test_config_defaults() -> None:
    cfg = compose_cfg(["method=dora"])
    assert cfg.method.r == 16 and cfg.method.alpha == 32 and cfg.method.use_dora is True
    assert compose_cfg(["method=pissa"]).method.init_lora_weights == "pissa_niter_4"
    hft = compose_cfg(["method=hft"]).method
    assert hft.stages == 4 and hft.stage_lr == "continue" and hft.ratio == 0.5
    assert compose_cfg(["method=gmt"]).method.mask_ratio == 0.4
