"""Rebuild a run's final plain model from a Lightning checkpoint (when the run was not exported).

The checkpoint holds the model as it trained (APEX wrappers, peft adapters) plus the method's state. We
rebuild the same structure — base model from the run's model config, the method prepared as in training,
APEX re-installed from its saved state WITHOUT permuting (the saved weights already are) — load the
weights, and let the method finalize it (fuse operators, merge adapters) exactly as training does at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from apexlm.errors import ModelError


def model_from_checkpoint(cfg: DictConfig, ckpt_path: Path, tokenizer: Any) -> nn.Module:
    """The finalized (plain HF) model of a run's checkpoint, float32 on CPU."""
    from apexlm.methods import build_method
    from apexlm.models.builders import build_model

    try:
        state = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ModelError(f"cannot read checkpoint {ckpt_path}: {str(err).splitlines()[0][:200]}") from None
    model = build_model(cfg.model, tokenizer)
    method = build_method(cfg.method, seed=int(cfg.seed))
    wrapped = method.prepare_for_resume(model)   # APEX: no assessment, no selection
    method.load_state_dict(state.get("apexlm_method") or {})   # APEX: re-installs its wrappers, unpermuted
    weights = {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = wrapped.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise ModelError(f"checkpoint {ckpt_path} does not match the run's model/method config "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    final = method.finalize(wrapped)
    method.close()                                   # drop the score hooks: a plain model again
    return final.float().eval()
