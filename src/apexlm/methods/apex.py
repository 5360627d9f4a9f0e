"""APEX as a training method: the library (`apexlm.apex`) behind the method contract.

prepare: install recorders and the wrappers at an identity layout (before any sharding). start (inside fit, on
the training devices): score units with an assessment pass over `assess_samples` training examples (no grad,
as the official stage-1 pass; each rank its own shard), then the first selection (select P/N/E, permute;
function-preserving).
transition: in place, one layer at a time (sharded weights too) (fold -> reselect from this stage's scores ->
permute -> operators to identity; their optimizer state reset, the base's permuted with the weights, unless the
method's policy resets all state, which `Method.end_stage` then does). finalize: fuse into a plain HF model
(sharded: fold in place, the export gathers). The stage counter is the library's (`Apex.stage`): there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from apexlm.apex import Apex, ApexConfig
from apexlm.errors import ConfigError
from apexlm.methods.base import Method

APEX_KEYS = ("k_ratio", "tuned_attn_ratio", "tuned_ffn_ratio", "scoring", "selection", "operator",
             "mix_channels", "init", "init_scale", "finetune_qk", "train_embeddings", "base_trainable",
             "low_budget_undrawn_s2", "reverse_heads")


def apex_config(cfg: Mapping[str, Any], seed: int) -> ApexConfig:
    """The library config from the `method` group; its own checks speak of `method.<key>` here."""
    kw = {k: cfg[k] for k in APEX_KEYS if k in cfg and cfg[k] is not None}
    try:
        return ApexConfig(seed=seed, **kw)
    except ConfigError as err:
        raise ConfigError(str(err).replace("apex ", "method.", 1)) from None


class ApexMethod(Method):
    name = "apex"
    rewrites_weights_in_place = True  # stage transitions fold/permute/reset trainable tensors

    def __init__(self, cfg: Mapping[str, Any], seed: int = 0):
        super().__init__(cfg)
        self.apex_cfg = apex_config(cfg, seed)
        for key in ("tuned_attn_ratio", "tuned_ffn_ratio"):  # a run's ratios (the library checks unit counts)
            value = getattr(self.apex_cfg, key)
            if value is not None and float(value) < 2 * self.apex_cfg.k_ratio:
                raise ConfigError(f"method.{key}={value} must cover P and N (>= 2*k_ratio = "
                                  f"{2 * self.apex_cfg.k_ratio:g}); raise it or lower k_ratio")
        if not float(cfg.get("mixer_lr_scale", 1.0)) > 0:
            raise ConfigError(f"method.mixer_lr_scale={cfg.get('mixer_lr_scale')} must be > 0")
        self.apex: Apex | None = None
        self.assess_tokens = 0

    def prepare(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> nn.Module:
        """Recorders and the wrappers at an identity layout (sizes from the ratios only, method §2): nothing
        depends on data yet, so this runs before sharding; `start` assesses and selects inside `fit`.
        Given `assess_batches` (scripts outside the pipeline, e.g. benchmarks), `start` runs right away."""
        self.apex = Apex(model, self.apex_cfg)
        self.apex.install()
        if assess_batches is not None:
            self.start(model, assess_batches)
        return model

    def check_model(self, dims: Mapping[str, Any], seed: int = 0) -> None:
        """P/N/E sizes per layer must exist for this model's KV groups and FFN channels (method §2)."""
        from apexlm.apex.selection import attention_plans, low_budget, low_budget_layers, unit_plan

        if not dims.get("n_kv"):
            return
        c = self.apex_cfg
        n_layers, n_kv = int(dims["n_layers"]), int(dims["n_kv"])
        unit_plan(int(dims["d_ff"]), c.k_ratio, c.tuned_ffn_ratio, "FFN channels", "tuned_ffn_ratio")
        chosen = low_budget_layers(n_layers, n_kv, c.k_ratio, c.seed) if low_budget(n_kv, c.k_ratio) else None
        attention_plans(n_layers, n_kv, c.k_ratio, c.tuned_attn_ratio, chosen)

    def prepare_for_resume(self, model: nn.Module) -> nn.Module:
        """As `prepare` (no data): the checkpoint (weights, then the method state) fills the installed wrappers."""
        return self.prepare(model, assess_batches=None)

    def start(self, model: nn.Module, assess_batches: Iterable[dict] | None = None) -> dict[str, Any]:
        """Stage-1 assessment over `assess_samples` examples in all, each rank its own shard, then the first
        selection (scores all-reduced once; select -> permute is function-preserving on identity wrappers)."""
        n_samples = int(self.cfg.get("assess_samples", 0) or 0)
        if n_samples > 0 and assess_batches is not None:
            self._assess(model, assess_batches, n_samples)
        return self.apex.expand()

    @property
    def stage(self) -> int:
        return self.apex.stage if self.apex is not None else 0

    @torch.no_grad()
    def _assess(self, model: nn.Module, batches: Iterable[dict], n_samples: int) -> None:
        """No-grad forwards over this rank's batches until the ranks together saw `n_samples` (method §1, 'when
        scores are collected'). Every rank makes the same number of forwards (sharded forwards are collectives)."""
        dist = torch.distributed
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        was_training = model.training
        model.eval()
        seen, tokens = 0, 0
        device = next(model.parameters()).device
        with self.apex.assessing():
            for batch in batches:
                ids = batch["input_ids"].to(device)
                mask = batch["attention_mask"].to(device)
                model(input_ids=ids, attention_mask=mask, use_cache=False)
                seen += ids.size(0) * world
                tokens += int(mask.sum())
                if seen >= n_samples:
                    break
        if world > 1:
            total = torch.tensor([tokens], dtype=torch.long, device=device)
            dist.all_reduce(total)
            tokens = int(total.item())
        self.assess_tokens += tokens
        model.train(was_training)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return self.apex.param_groups(lr, weight_decay, float(self.cfg.get("mixer_lr_scale", 1.0)))

    def transition(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Apex.restage (advances `Apex.stage`); optimizer state is left to `end_stage` when it clears all."""
        if self.optimizer_reset:
            return self.apex.restage(optimizer=None)
        return self.apex.restage(optimizer=optimizer, reset_base_state=False)

    def finalize(self, model: nn.Module) -> nn.Module:
        self.apex.fuse()
        return model

    def close(self) -> None:
        if self.apex is not None:
            self.apex.close()

    def state_dict(self) -> dict[str, Any]:
        """Counters and the library state. With several processes the score accumulators of EVERY rank are
        kept (`recorders`, one all-gather: Lightning builds the checkpoint on all ranks, rank 0 writes it),
        so a resume from mid-stage continues each rank's own partial scores exactly."""
        apex = self.apex.state_dict() if self.apex else None
        dist = torch.distributed
        if apex is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, apex["recorder"])
            apex = {**apex, "recorders": everyone}
        return {**super().state_dict(), "apex": apex, "assess_tokens": self.assess_tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the counters and the library state (which re-installs the wrappers, unpermuted, and puts
        its generator back after drawing their inits), so the weights can load next."""
        super().load_state_dict(state)
        self.assess_tokens = int(state.get("assess_tokens", 0))
        saved = state.get("apex")
        if self.apex is not None and saved is not None:
            dist = torch.distributed
            everyone = saved.get("recorders")
            if everyone and dist.is_available() and dist.is_initialized() and len(everyone) == dist.get_world_size():
                saved = {**saved, "recorder": everyone[dist.get_rank()]}   # this rank's own partial scores
            self.apex.load_state_dict(saved)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        out = super().summary(model)
        out["assess_tokens"] = self.assess_tokens
        out["mixer_lr_scale"] = float(self.cfg.get("mixer_lr_scale", 1.0))
        out["init_scale"] = float(self.cfg.get("init_scale", 1.0))
        return out
