"""The §8 analyses of a finished model, outside training (evaluate_model with eval.analytics, and eval.py).

When the training-time `AnalyticsCallback` already wrote `analysis/final.json`, nothing is recomputed and
its scalars are returned. Otherwise the base is rebuilt from the run's model config (same seed, so a fresh
tiny model gets its exact initial weights) or loaded from `eval.base_model`. An APEX model's export has its
heads/channels permuted and the permutation map is not saved with it, so ΔW is skipped for APEX runs here
(the callback, which sees `Apex.unit_ids`, computes it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apexlm.analysis.analyzer import Analyzer, snapshot_scalars

log = logging.getLogger("apexlm")
PERMUTING_METHODS = ("apex", "s2")


def base_model_for(cfg: Mapping[str, Any], tokenizer: Any, device: torch.device
                   ) -> tuple[nn.Module | None, str]:
    """(base model or None, note): `eval.base_model` if set, else the training run's model config rebuilt."""
    ref = (cfg.get("eval") or {}).get("base_model")
    if ref:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(ref), dtype=torch.float32)
        return model.to(device), f"eval.base_model={ref}"
    if cfg.get("method") is None or cfg.get("model") is None:
        return None, "no base model (set eval.base_model to compare against one)"
    from apexlm.models.builders import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("seed", 0)))
        model = build_model(cfg["model"], tokenizer)
    src = cfg["model"].get("pretrained") or f"fresh {cfg['model'].get('kind')} model, seed {cfg.get('seed')}"
    return model.to(device), f"rebuilt from the run's model config ({src})"


def final_analysis(model: nn.Module, tokenizer: Any, cfg: Mapping[str, Any], run_dir: Path,
                   batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Write `analysis/final.json` (+ PNGs) unless it exists; return its scalar summaries."""
    out = Path(run_dir) / "analysis"
    final = out / "final.json"
    if final.is_file():
        return snapshot_scalars(json.loads(final.read_text()))
    analyzer = Analyzer(out, batches)
    device = next(model.parameters()).device
    if (out / "base.json").is_file():          # measured during training: keep it, reuse its stats
        analyzer.load_base()
    else:
        base, note = base_model_for(cfg, tokenizer, device)
        if base is not None:
            analyzer.set_base(base, None, note)
            del base
    method = str((cfg.get("method") or {}).get("name", ""))
    delta_note = None
    if method in PERMUTING_METHODS:
        delta_note = ("APEX permutes heads/channels and the export does not keep the permutation map: ΔW "
                      "skipped here (the training-time AnalyticsCallback computes it)")
    steps = (cfg.get("trainer") or {}).get("max_steps")
    step = int(steps) if steps is not None and int(steps) > 0 else None
    return analyzer.snapshot(model, "final", step, delta_note=delta_note)
