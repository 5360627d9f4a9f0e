"""Meta-device budget dry-runs (method §5).

`apex_budget` builds the model on the meta device (no memory), expands it with APEX (selection from
empty scores, i.e. seeded tie-breaks: sizes do not depend on which units are chosen) and counts.
"""

from __future__ import annotations

from typing import Any

import torch

from apexlm.apex.params import count_params


def apex_budget(hf_config: Any, cfg: Any) -> dict[str, Any]:
    """Trainable parameters of APEX with `cfg` on a model of `hf_config`, without allocating it.

    Returns {"trainable", "total" (the base model's parameters), "fraction" = trainable / total}.
    """
    from transformers import AutoModelForCausalLM

    from apexlm.apex.core import Apex

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    apex = Apex(model, cfg)
    total = count_params(model)[1]
    apex.expand()
    trainable = count_params(model)[0]
    apex.close()
    return {"trainable": trainable, "total": total, "fraction": trainable / total}
