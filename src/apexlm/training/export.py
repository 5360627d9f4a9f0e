"""The trained model as a plain HF model, from one process or from FSDP2 shards.

Unsharded (one process, DDP): `method.finalize(model)` (APEX fused, adapters merged) is the plain model.

Sharded (FSDP2): `method.finalize` first (APEX folds layer by layer in place and keeps its identity
wrappers; the other methods change nothing on shards), then every rank joins the full-state gather (one
parameter at a time, to rank 0's CPU), and rank 0 builds the plain model from it: the HF keys as they are
(full, hft, gmt, and APEX after the fold), or, when the keys are a peft model's, a fresh method of the same
config rebuilds that structure on a meta twin, loads the state and merges (method.finalize). The training
model stays sharded, so `trainer.validate` still runs on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from apexlm.methods.base import Method


def finalize_for_export(model: nn.Module, method: Method, fresh_method: Callable[[], Method], gather: bool = True
                        ) -> tuple[nn.Module, nn.Module | None]:
    """(training model after finalize, plain HF model or None on ranks > 0). Every rank must call it.

    `gather=False` skips the sharded gather (no export, no evaluation: nothing needs the plain copy)."""
    from apexlm.apex.sharded import model_is_sharded

    if not model_is_sharded(model):
        plain = method.finalize(model)
        return plain, plain
    import torch.distributed as dist

    from apexlm.models.sharding import gather_full_state, plain_model_from_state

    model = method.finalize(model)
    if not gather:
        return model, None
    state = gather_full_state(model)
    if dist.get_rank() != 0:
        return model, None
    plain_keys = _plain_keys(model)
    if plain_keys <= set(state):
        return model, plain_model_from_state(model, state)
    twin = fresh_method()
    return model, plain_model_from_state(model, state, structure=lambda m: twin.prepare(m),
                                         finalize=twin.finalize)


def _plain_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the plain HF model of `model`'s config (built on the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    hf: Any = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(hf.config)
    return set(plain.state_dict().keys())
