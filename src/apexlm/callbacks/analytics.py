"""Analytics during training: the §8 analyses at every stage boundary and at train end.

`AnalyticsCallback(cfg, run_dir)` (added to the trainer when `cfg.eval.analytics` is true):
  on_fit_start       measures the model the run starts from (function-equivalent to the base; for APEX it
                     is already permuted, so its weights are mapped back to original unit order through
                     `Apex.unit_ids`) on the first `eval.analytics_batches` val batches;
  before the optimizer step that completes a boundary step: snapshots the APEX unit scores of the ending
                     stage (the recorders are zeroed by the transition);
  once the method's stage has advanced (seen at the next batch start or train end, so whichever callback
                     runs the transition and in whatever order): snapshot `stage<k>_step<s>` (activations,
                     erank of W and ΔW, P/N Jaccard with the stage before, score histogram);
  on_train_end       snapshot `final` (APEX wrappers are read through their effective weights).
Results land in `<run_dir>/analysis/` (see `apexlm.analysis.analyzer`); scalars go to the trainer's loggers
as `eval/…`. Only rank zero analyses; score snapshots (a collective under DDP) happen on every rank.
Sharded strategies (FSDP, DeepSpeed) are not supported: the callback then warns and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from apexlm.analysis.analyzer import Analyzer
from apexlm.analysis.selection import Sets, copy_sets, stage_overlap

log = logging.getLogger("apexlm")


def _apex(pl_module: L.LightningModule) -> Any | None:
    """The method's `Apex` object, if the run trains with APEX."""
    return getattr(getattr(pl_module, "method", None), "apex", None)


def _ids(apex: Any | None) -> dict[str, list[torch.Tensor]] | None:
    if apex is None:
        return None
    return {kind: [t.detach().cpu().clone() for t in per_layer] for kind, per_layer in apex.unit_ids.items()}


def _scores(apex: Any | None) -> dict[str, list[torch.Tensor]] | None:
    """Detached CPU copy of the recorded scores (a collective under DDP: call on every rank)."""
    if apex is None:
        return None
    scores = apex.scores
    return {kind: [s.detach().float().cpu().clone() for s in per_layer] for kind, per_layer in scores.items()}


class AnalyticsCallback(L.Callback):
    """See the module docstring. `cfg` is the run config (reads `eval.analytics_batches`)."""

    def __init__(self, cfg: Mapping[str, Any], run_dir: str | Path) -> None:
        ev = cfg.get("eval") or {}
        self.n_batches = int(ev.get("analytics_batches", 2) or 0)
        self.out_dir = Path(run_dir) / "analysis"
        self.analyzer: Analyzer | None = None
        self.enabled = True
        self.prev_sets: Sets | None = None
        self.pending_scores: dict[str, list[torch.Tensor]] | None = None
        self.seen_stage = 0  # the method's stage at the last snapshot
        self.sets_taken = False  # prev_sets read at the first training batch

    # ---- start ---------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = type(trainer.strategy).__name__
        if "FSDP" in name or "DeepSpeed" in name:
            log.warning("analytics skipped: %s shards the weights (run eval.py on the export instead)", name)
            self.enabled = False
            return
        apex = _apex(pl_module)
        self.seen_stage = int(pl_module.method.stage)
        if not trainer.is_global_zero:
            return
        batches = []
        dm = trainer.datamodule
        if dm is not None and self.n_batches > 0 and hasattr(dm, "val_dataloader"):
            for i, batch in enumerate(dm.val_dataloader()):
                if i >= self.n_batches:
                    break
                batches.append({k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")})
        self.analyzer = Analyzer(self.out_dir, batches)
        note = ("weights at the resumed checkpoint, not the original base" if trainer.ckpt_path else
                "the model at fit start (function-equivalent to the base; APEX-permuted weights mapped back)")
        self.analyzer.set_base(pl_module.model, _ids(apex), note)

    # ---- stage boundaries ----------------------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.enabled and trainer.global_step + 1 in getattr(pl_module, "boundaries", []):
            self.pending_scores = _scores(_apex(pl_module))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self.sets_taken:  # the first selection runs in the method's start, after every on_train_start
            self.prev_sets, self.sets_taken = copy_sets(getattr(_apex(pl_module), "sets", None)), True
        self._after_transition(trainer, pl_module)

    def _after_transition(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Snapshot each boundary whose transition has happened since the last look."""
        boundaries = list(getattr(pl_module, "boundaries", []))
        while self.enabled and self.seen_stage < min(int(pl_module.method.stage), len(boundaries)):
            step = boundaries[self.seen_stage]
            self.seen_stage += 1
            self._boundary(trainer, pl_module, step)

    def _boundary(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        apex = _apex(pl_module)
        cur = copy_sets(getattr(apex, "sets", None))
        overlap = stage_overlap(self.prev_sets, cur) if self.prev_sets and cur else None
        self.prev_sets = cur
        stage = int(pl_module.method.stage)
        self._snapshot(trainer, pl_module, f"stage{stage}_step{step}", step, self.pending_scores, overlap)
        self.pending_scores = None

    # ---- end -----------------------------------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        self._after_transition(trainer, pl_module)
        self._snapshot(trainer, pl_module, "final", trainer.global_step, _scores(_apex(pl_module)), None)

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str, step: int,
                  scores: dict[str, list[torch.Tensor]] | None, overlap: dict[str, Any] | None) -> None:
        if not trainer.is_global_zero or self.analyzer is None:
            return
        apex = _apex(pl_module)
        scalars = self.analyzer.snapshot(pl_module.model, tag, step, stage=int(pl_module.method.stage),
                                         tokens_seen=int(getattr(pl_module, "tokens_seen", 0)),
                                         unit_ids=_ids(apex), scores=scores, overlap=overlap)
        for logger in trainer.loggers:
            logger.log_metrics({f"eval/{k}": v for k, v in scalars.items()}, step=step)
