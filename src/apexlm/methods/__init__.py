"""Training methods behind one contract (`apexlm.methods.base.Method`); `build_method` picks one by name.

`REGISTRY` is the one list of methods: validation, the budget CLI and the docs read it. Adding a method is
one file here, one `configs/method/<name>.yaml`, tests, a README row — and one line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from apexlm.errors import ConfigError
from apexlm.methods.base import Method

# name -> (module, class, whether the constructor takes the run's seed)
REGISTRY: dict[str, tuple[str, str, bool]] = {
    "full": ("apexlm.methods.full", "FullMethod", False),
    "apex": ("apexlm.methods.apex", "ApexMethod", True),
    "s2": ("apexlm.methods.apex", "ApexMethod", True),
    "lora": ("apexlm.methods.peft_adapters", "PeftAdapterMethod", False),
    "dora": ("apexlm.methods.peft_adapters", "PeftAdapterMethod", False),
    "pissa": ("apexlm.methods.peft_adapters", "PeftAdapterMethod", False),
    "hft": ("apexlm.methods.hft", "HftMethod", True),
    "gmt": ("apexlm.methods.gmt", "GmtMethod", False),
}


def method_class(name: str) -> type[Method]:
    """The class behind `method.name=<name>` (imported on demand: peft loads only when used)."""
    if name not in REGISTRY:
        raise ConfigError(f"method.name={name!r} is unknown; choose one of {', '.join(REGISTRY)}")
    module, cls, _ = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_method(cfg: Mapping[str, Any], seed: int = 0) -> Method:
    """The method object for a `method` config group; its constructor checks the method's own fields."""
    name = str(cfg.get("name"))
    cls = method_class(name)
    return cls(cfg, seed=seed) if REGISTRY[name][2] else cls(cfg)
