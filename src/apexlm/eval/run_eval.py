"""`evaluate_model`: every evaluation of one model, written to `eval.json` and logged to W&B.

Called by the training pipeline at the end of a run (`eval.enabled`) and by `eval.py`. Parts (each one
switchable, see configs/eval/default.yaml):
  ppl/<domain>   token-weighted perplexity on the val split of each `eval.ppl_domains` entry — the source
                 (shakespeare) and target (pycode) domains of continued pre-training, so forgetting shows;
  ppl/val        the run's own val data, exactly as the trainer's final validation saw it (the trainer's
                 limit_val_batches, not eval.max_ppl_batches, sets how many batches);
  exact_match    greedy generation on held-out instruction items, per task and macro average;
  mc_accuracy    log-likelihood multiple choice on items with a closed answer set;
  analytics      the §8 analyses of the final model (`apexlm.analysis.offline`), if `eval.analytics`;
  harness/...    lm-evaluation-harness tasks (`eval.harness.tasks` / `.suite`, `apexlm.eval.harness`): resolved
                 and loaded first, so a bad name or missing data stops in seconds, evaluated last.
Results are never written over an existing file: a second evaluation of a run dir writes
`eval-<time>.json`. Metric keys carry no prefix here; the training summary and W&B prefix them `eval/`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from apexlm.eval.harness_setup import harness_settings, requested_tasks
from apexlm.eval.settings import eval_settings, free_path
from apexlm.eval.wandb_log import log_to_wandb
from apexlm.utils.summary import write_json

log = logging.getLogger("apexlm")

def wants_harness(ev: Mapping[str, Any]) -> bool:
    """True when `eval.harness.tasks` or `eval.harness.suite` asks for harness tasks."""
    return bool(requested_tasks(harness_settings(ev)))


def _block_size(cfg: Mapping[str, Any], ev: Mapping[str, Any], model: nn.Module) -> int:
    size = ev.get("block_size") or (cfg.get("data") or {}).get("block_size") or 256
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(min(int(size), int(context))) if context else int(size)


def _name(domain: str) -> str:
    """A metric-key-safe name for a domain or a path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(domain).stem if "/" in domain else domain)


def _perplexities(model: nn.Module, tokenizer: Any, cfg: Mapping[str, Any], ev: Mapping[str, Any],
                  val_loader: Any) -> dict[str, float]:
    from apexlm.data.datamodule import text_val_loader
    from apexlm.eval.perplexity import split_perplexity

    out: dict[str, float] = {}
    bs, cap = int(ev["batch_size"]), ev.get("max_ppl_batches")
    data_dir = str((cfg.get("paths") or {}).get("data_dir") or "") or None
    for domain in ev.get("ppl_domains") or []:
        loader = text_val_loader(str(domain), tokenizer, _block_size(cfg, ev, model), bs, data_dir,
                                 max_samples=int(cap) * bs if cap else None)     # evenly spaced blocks
        res = split_perplexity(model, loader)
        out.update({f"ppl/{_name(domain)}": res["ppl"], f"loss/{_name(domain)}": res["loss"],
                    f"tokens/{_name(domain)}": res["tokens"]})
    if val_loader is not None:
        res = split_perplexity(model, val_loader, val_batches(cfg, len(val_loader), cap))  # first batches
        out.update({"ppl/val": res["ppl"], "loss/val": res["loss"], "tokens/val": res["tokens"]})
    return out


def val_batches(cfg: Mapping[str, Any], n_batches: int, cap: Any) -> int | None:
    """How many val batches `ppl/val` reads: as many as the trainer's validation did, so that `ppl/val`
    equals the run's final val ppl (trainer.limit_val_batches: an int = that many, a fraction of 1 = that
    share as Lightning rounds it, 1.0/null = all). A run that never validated (0) falls back to `cap`."""
    limit = (cfg.get("trainer") or {}).get("limit_val_batches")
    if limit is None or (isinstance(limit, float) and limit == 1.0):
        return None
    if isinstance(limit, float) and 0.0 < limit < 1.0:
        return max(1, int(n_batches * limit))
    if int(limit) > 0:
        return int(limit)
    return int(cap) if cap else None


def run_val_loader(cfg: Mapping[str, Any], tokenizer: Any) -> Any | None:
    """The val loader of the run's own data config (None when the config has no data section)."""
    if not cfg.get("data"):
        return None
    from apexlm.data.datamodule import build_datamodule

    dm = build_datamodule(cfg["data"], tokenizer, seed=int(cfg.get("seed", 0)))
    dm.setup("fit")
    return dm.val_dataloader()


def _instruction_metrics(model: nn.Module, tokenizer: Any, cfg: Mapping[str, Any], ev: Mapping[str, Any],
                         out_dir: Path, notes: list[str]) -> dict[str, float]:
    from apexlm.data.eval_items import load_eval_items
    from apexlm.eval.exact_match import exact_match, items_per_task
    from apexlm.eval.multiple_choice import multiple_choice

    if getattr(tokenizer, "chat_template", None) is None:
        notes.append("exact match / multiple choice skipped: the tokenizer has no chat template")
        return {}
    all_items = load_eval_items(ev.get("items_path") or (cfg.get("paths") or {}).get("data_dir"))
    items = items_per_task(all_items, ev.get("max_items_per_task"))
    out: dict[str, float] = {}
    bs = int(ev["batch_size"])
    if ev.get("exact_match"):
        metrics, records = exact_match(model, tokenizer, items, bs, int(ev["max_new_tokens"]))
        out.update(metrics)
        path = free_path(out_dir, "eval_generations", ".jsonl")
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if ev.get("multiple_choice"):
        mc = multiple_choice(model, tokenizer, items, bs, int(ev["mc_max_choices"]), pool=all_items)
        if not mc:
            notes.append("multiple choice skipped: no task has a closed answer set of "
                         f"2..{ev['mc_max_choices']} answers and no item lists choices")
        out.update(mc)
    return out


def _analysis_batches(model: nn.Module, tokenizer: Any, cfg: Mapping[str, Any], ev: Mapping[str, Any],
                      val_loader: Any) -> list[dict[str, Any]]:
    """The first `analytics_batches` batches of the run's val data (else of the first ppl domain)."""
    n = int(ev.get("analytics_batches") or 0)
    if n <= 0:
        return []
    if val_loader is None and ev.get("ppl_domains"):
        from apexlm.data.datamodule import text_val_loader

        data_dir = str((cfg.get("paths") or {}).get("data_dir") or "") or None
        val_loader = text_val_loader(str(ev["ppl_domains"][0]), tokenizer, _block_size(cfg, ev, model),
                                     int(ev["batch_size"]), data_dir)
    out = []
    for batch in val_loader or []:
        if len(out) >= n:
            break
        out.append(batch)
    return out


def evaluate_model(model: nn.Module, tokenizer: Any, cfg: Mapping[str, Any],
                   run_dir: str | Path) -> dict[str, Any]:
    """Evaluate `model` as `cfg.eval` says; write `eval.json` in run_dir; log to W&B if a run is active.

    Returns the flat metrics (numbers) plus `notes` (what was skipped and why).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ev = eval_settings(cfg)
    t0 = time.perf_counter()
    notes: list[str] = []
    results: dict[str, Any] = {}
    plan = None
    if wants_harness(ev):                       # bad task names / missing data: stop before any model work
        from apexlm.eval.harness import prepare_harness

        plan = prepare_harness(tokenizer, cfg, ev)
    t_prep = time.perf_counter() - t0
    val_loader = run_val_loader(cfg, tokenizer) if ev.get("val") else None
    if ev.get("val") and val_loader is None:
        notes.append("ppl/val skipped: no data config (evaluating a model without a training run)")
    results.update(_perplexities(model, tokenizer, cfg, ev, val_loader))
    t1 = time.perf_counter()
    if ev.get("exact_match") or ev.get("multiple_choice"):
        results.update(_instruction_metrics(model, tokenizer, cfg, ev, run_dir, notes))
    t2 = time.perf_counter()
    if ev.get("analytics"):
        from apexlm.analysis.offline import final_analysis

        batches = _analysis_batches(model, tokenizer, cfg, ev, val_loader)
        results.update(final_analysis(model, tokenizer, cfg, run_dir, batches))
    t3 = time.perf_counter()
    harness_info: dict[str, Any] = {}
    if plan is not None:
        from apexlm.eval.harness import run_harness

        metrics, harness_info, _ = run_harness(plan, model, tokenizer, run_dir, int(ev["batch_size"]))
        results.update(metrics)
    t4 = time.perf_counter()
    results.update({"time_s/ppl": t1 - t0 - t_prep, "time_s/generation": t2 - t1, "time_s/analytics": t3 - t2,
                    "time_s/harness": t4 - t3 + t_prep, "time_s/total": t4 - t0})
    path = free_path(run_dir, "eval", ".json")
    write_json(path, {**results, "notes": notes, "settings": ev, **({"harness": harness_info} if plan else {})})
    log.info("eval: %s (%.1fs)", path, t4 - t0)
    numeric = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    task_rows = [[k.split("/", 1)[1], v, results.get(f"mc_accuracy/{k.split('/', 1)[1]}")]
                 for k, v in numeric.items() if k.startswith("exact_match/")]
    table = {"eval/per_task": (["task", "exact_match", "mc_accuracy"], task_rows)} if task_rows else {}
    harness_rows = [[*k.split("/", 2)[1:], v] for k, v in numeric.items() if k.startswith("harness/")]
    if harness_rows:
        table["eval/harness"] = (["task", "metric", "value"], harness_rows)
    log_to_wandb({f"eval/{k}": v for k, v in numeric.items()}, tables=table or None)
    return {**results, "notes": notes}
