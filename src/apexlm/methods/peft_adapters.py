"""LoRA, DoRA and PiSSA baselines through `peft`, behind the method contract.

prepare: wrap the Hugging Face model with `peft.get_peft_model` (base frozen, low-rank adapters on the chosen
linears; optionally embeddings and lm_head train too). The wrapped model keeps the HF call signature
(`model(input_ids=..., attention_mask=..., use_cache=False).logits`), so the one training loop runs it as is.
finalize: `merge_and_unload` folds the adapters into the weights and returns the plain HF model, whose
state_dict keys are those of the original model. PiSSA moves the principal part of each weight into the
adapter and keeps the residual in the base, so only the merged weight equals "the" trained weight; merging
is therefore required, not optional, for PiSSA exports.

The three variants differ only in two peft switches, picked by `method.name` unless the config overrides them:
lora (kaiming A, zero B), dora (`use_dora=True`: magnitude vector + direction), pissa
(`init_lora_weights="pissa_niter_4"`: adapters from a fast randomized SVD of each weight).

Meta-device models (`python -m apexlm.budget`): peft wraps them fine when the adapters are created under a
meta device context; PiSSA's SVD cannot run on meta tensors, so a meta model gets plain LoRA initialisation,
which has exactly the same adapter shapes and therefore the same parameter count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.errors import ConfigError
from apexlm.methods.base import Method, count_params

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VARIANTS = ("lora", "dora", "pissa")


def is_meta(model: nn.Module) -> bool:
    """True when the model's weights are not allocated (budget dry-runs)."""
    return any(p.is_meta for p in model.parameters())


def _unique_numel(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


class PeftAdapterMethod(Method):
    """LoRA / DoRA / PiSSA: low-rank adapters on a frozen base, merged back at export."""

    name = "lora"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.variant = str(cfg.get("name", "lora"))
        if self.variant not in VARIANTS:
            raise ConfigError(f"method.name={self.variant!r} is not a peft adapter; "
                              f"choose one of {', '.join(VARIANTS)}")
        self.name = self.variant
        self.r = int(cfg.get("r", 16) or 0)
        if self.r < 1:
            raise ConfigError(f"method.r={cfg.get('r')} must be a positive integer (the adapter rank)")
        alpha = cfg.get("alpha")
        self.alpha = float(alpha) if alpha is not None else 2.0 * self.r
        self.dropout = float(cfg.get("dropout", 0.0) or 0.0)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout={self.dropout} must be in [0, 1)")
        targets = cfg.get("target_modules") or LLAMA_LINEARS
        self.target_modules = [str(t) for t in targets]
        self.train_embeddings = bool(cfg.get("train_embeddings", False))
        self.use_dora = bool(cfg.get("use_dora", self.variant == "dora"))
        init = cfg.get("init_lora_weights")
        self.init_lora_weights: bool | str = (
            init if init is not None else ("pissa_niter_4" if self.variant == "pissa" else True))
        self.base_params = 0  # parameters of the plain model (what an export holds)
        self.trainable_params = 0  # adapters (+ embeddings when they train), recorded at prepare

    # ---- preparation -------------------------------------------------------------------------------
    def lora_config(self, meta: bool = False) -> Any:
        """The peft `LoraConfig` of this method (PiSSA init swapped for plain init on a meta model)."""
        from peft import LoraConfig

        init = self.init_lora_weights
        if meta and isinstance(init, str) and init.startswith("pissa"):
            init = True  # same adapter shapes, no SVD on meta tensors
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), use_dora=self.use_dora,
                          init_lora_weights=init, bias="none", task_type="CAUSAL_LM")

    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Wrap with peft and return the peft model (the training loop calls it like the HF model)."""
        from peft import get_peft_model

        self._check_targets(model)
        self.base_params = _unique_numel(model.parameters())
        meta = is_meta(model)
        if meta:
            with torch.device("meta"):
                peft_model = get_peft_model(model, self.lora_config(meta=True))
        else:
            peft_model = get_peft_model(model, self.lora_config())
        if self.train_embeddings:
            base = peft_model.get_base_model()
            for module in (base.get_input_embeddings(), base.get_output_embeddings()):
                if module is not None:
                    for p in module.parameters():
                        p.requires_grad_(True)
        self.trainable_params, _ = count_params(peft_model)
        return peft_model

    def _check_targets(self, model: nn.Module) -> None:
        """Stop with one line when a target name matches no linear of the model (a typo trains nothing)."""
        leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        missing = [t for t in self.target_modules if t not in leaves]
        if missing:
            raise ConfigError(f"method.target_modules {missing} match no linear layer of this model; "
                              f"available: {sorted(leaves)}")

    # ---- export ------------------------------------------------------------------------------------
    def finalize(self, model: nn.Module) -> nn.Module:
        """Merge the adapters into the base weights; returns the plain HF model (the original's keys).

        A sharded (FSDP2) model is returned as it is: its export merges on a gathered copy
        (`apexlm.training.export`)."""
        from apexlm.apex.sharded import model_is_sharded

        if model_is_sharded(model):
            return model
        if hasattr(model, "merge_and_unload"):
            return model.merge_and_unload(progressbar=False)
        return model

    # ---- reporting ---------------------------------------------------------------------------------
    def summary(self, model: nn.Module) -> dict[str, Any]:
        """Adapter budget: trainable / plain-model parameters (the same ratio `apexlm.budget` prints).

        Works before and after `finalize`: after merging nothing requires grad any more, so the counts
        recorded at `prepare` are reported.
        """
        trainable = count_params(model)[0] if hasattr(model, "merge_and_unload") else self.trainable_params
        total = self.base_params or _unique_numel(model.parameters())
        return {"trainable_params": trainable, "total_params": total,
                "trainable_fraction": trainable / max(total, 1), "adapter_rank": self.r,
                "adapter_alpha": self.alpha, "adapter_variant": self.variant}
