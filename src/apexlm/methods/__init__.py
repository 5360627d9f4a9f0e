"""Training methods behind one contract (`apexlm.methods.base.Method`); `build_method` picks one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apexlm.errors import ConfigError
from apexlm.methods.base import Method


def build_method(cfg: Mapping[str, Any], seed: int = 0) -> Method:
    name = str(cfg.get("name"))
    if name == "full":
        from apexlm.methods.full import FullMethod

        return FullMethod(cfg)
    if name in ("apex", "s2"):
        from apexlm.methods.apex import ApexMethod

        return ApexMethod(cfg, seed=seed)
    if name in ("lora", "dora", "pissa"):
        from apexlm.methods.peft_adapters import PeftAdapterMethod

        return PeftAdapterMethod(cfg)
    if name == "hft":
        from apexlm.methods.hft import HftMethod

        return HftMethod(cfg, seed=seed)
    if name == "gmt":
        from apexlm.methods.gmt import GmtMethod

        return GmtMethod(cfg)
    raise ConfigError(f"method '{name}' is unknown; "
                      "choose one of: full, apex, s2, lora, dora, pissa, hft, gmt")
