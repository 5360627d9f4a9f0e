"""Training methods behind one contract (`apexlm.methods.base.Method`); `build_method` picks one by name.

`REGISTRY` is the one list of methods: validation, the budget CLI and the docs read it. Adding a method is
one file here, one `configs/method/<name>.yaml`, tests, a README row — and one line below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from apexlm.errors import ConfigError
from apexlm.methods.base import Method


# Each loader imports its module on first use (peft loads only when a peft method is built).
def _full() -> type[Method]:
    from apexlm.methods.full import FullMethod

    return FullMethod


def _apex() -> type[Method]:
    from apexlm.methods.apex import ApexMethod

    return ApexMethod


def _peft() -> type[Method]:
    from apexlm.methods.peft_adapters import PeftAdapterMethod

    return PeftAdapterMethod


def _hft() -> type[Method]:
    from apexlm.methods.hft import HftMethod

    return HftMethod


def _gmt() -> type[Method]:
    from apexlm.methods.gmt import GmtMethod

    return GmtMethod


# name -> (class loader, whether the constructor takes the run's seed)
REGISTRY: dict[str, tuple[Callable[[], type[Method]], bool]] = {
    "full": (_full, False), "apex": (_apex, True), "s2": (_apex, True),
    "lora": (_peft, False), "dora": (_peft, False), "pissa": (_peft, False),
    "hft": (_hft, True), "gmt": (_gmt, False),
}


def method_class(name: str) -> type[Method]:
    """The class behind `method.name=<name>`."""
    if name not in REGISTRY:
        raise ConfigError(f"method.name={name!r} is unknown; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name][0]()


def build_method(cfg: Mapping[str, Any], seed: int = 0) -> Method:
    """The method object for a `method` config group; its constructor checks the method's own fields."""
    name = str(cfg.get("name"))
    cls = method_class(name)
    return cls(cfg, seed=seed) if REGISTRY[name][1] else cls(cfg)
