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
    raise ConfigError(f"method '{name}' is unknown; choose one of: full, apex, s2")
