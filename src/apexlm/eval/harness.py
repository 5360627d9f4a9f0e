"""Standard evaluation through EleutherAI's lm-evaluation-harness, beside apexlm's own scorers.

`prepare_harness(tokenizer, cfg, ev)` resolves and loads the requested tasks first (one-line errors, exit 2,
before any model work: `apexlm.eval.harness_setup`); `run_harness(plan, model, tokenizer, run_dir)` then
evaluates the model that is in memory — the one training just finished, or the export/checkpoint `eval.py`
loaded — through the harness's `HFLM` wrapped around that model and tokenizer (nothing is downloaded), on
the device the model is on, with the hub offline. Metric keys: `harness/<task>/<metric>` (with
`/<filter>` when the harness's filter is not "none") and `harness/<task>/<metric>_stderr`; the run dir gets
`harness/` (or `harness-<time>/`): `results.json` (harness version, batch size, dtype, device, per-task
configs, versions, shots), `task_configs/<task>.yaml` and `samples_<task>.jsonl`.

The shipped apexlm_rg / apexlm_mc tasks are tuned to the tokenizer here, exactly as apexlm's own scorers
treat it: generation stops at any special token except pad (end of turn, role markers) and generates at
most `eval.max_new_tokens`; each choice is followed by the end-of-turn marker when the chat template is
applied. The chat template is applied when the tokenizer has one (`eval.harness.apply_chat_template=auto`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from apexlm.eval.harness_setup import harness_settings, load_harness_tasks, offline_hub, requested_tasks
from apexlm.eval.harness_tasks import SHIPPED_PREFIX

log = logging.getLogger("apexlm")


@dataclass
class HarnessPlan:
    """What `run_harness` evaluates: the loaded task dict and the settings it was made with."""

    settings: dict[str, Any]
    task_dict: dict[str, Any]
    chat: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def _chat(tokenizer: Any, mode: Any) -> bool:
    has = getattr(tokenizer, "chat_template", None) is not None
    if str(mode).lower() == "auto":
        return has
    return bool(mode) and str(mode).lower() != "false"


def _metadata(cfg: Mapping[str, Any], ev: Mapping[str, Any], choice_suffix: str) -> dict[str, Any]:
    """What the shipped tasks read (`apexlm.eval.harness_tasks`): the same items as our own scorers."""
    metadata = {"apexlm_items": ev.get("items_path") or (cfg.get("paths") or {}).get("data_dir"),
                "apexlm_max_items": ev.get("max_items_per_task"), "apexlm_mc_max_choices": ev.get("mc_max_choices"),
                "apexlm_choice_suffix": choice_suffix}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in metadata.items()}


def check_harness(cfg: Mapping[str, Any]) -> None:
    """Resolve the requested harness tasks and load their data without a model (eval.py runs it before it
    loads one), so that a typo or missing data stops in seconds with one line, exit 2."""
    from apexlm.eval.settings import eval_settings

    ev = eval_settings(cfg)
    hs = harness_settings(ev)
    if requested_tasks(hs):
        with offline_hub(bool(hs.get("offline", True))):
            load_harness_tasks(hs, _metadata(cfg, ev, ""))


def check_harness_config(cfg: Mapping[str, Any]) -> None:
    """Before training: when `eval.enabled` asks for harness tasks, check them now (`check_harness`), so
    that a typo or missing data stops the run before its first step, not after it."""
    if (cfg.get("eval") or {}).get("enabled"):
        check_harness(cfg)


def prepare_harness(tokenizer: Any, cfg: Mapping[str, Any], ev: Mapping[str, Any]) -> HarnessPlan:
    """Resolve + load the requested harness tasks offline (ConfigError/DataError: one line, exit 2)."""
    hs = harness_settings(ev)
    chat = _chat(tokenizer, hs.get("apply_chat_template", "auto"))
    metadata = _metadata(cfg, ev, (tokenizer.eos_token or "") if chat else "")
    with offline_hub(bool(hs.get("offline", True))):
        task_dict = load_harness_tasks(hs, metadata)
    _tune_shipped(task_dict, tokenizer, int(ev.get("max_new_tokens") or 40))
    return HarnessPlan(settings=hs, task_dict=task_dict, chat=chat, metadata=metadata)


def _tune_shipped(task_dict: Mapping[str, Any], tokenizer: Any, max_new_tokens: int) -> None:
    """Stop the shipped generation tasks where apexlm's own generation stops (`stop_token_ids`)."""
    from apexlm.eval.generation import stop_token_ids

    stops = stop_token_ids(tokenizer)
    texts = [tokenizer.convert_ids_to_tokens(i) for i in stops]
    for name, task in task_dict["tasks"].items():
        if name.startswith(SHIPPED_PREFIX) and task.get_config("output_type") == "generate_until":
            task.set_config("generation_kwargs", {"until": texts, "eos_token_id": stops,
                                                  "max_gen_toks": max_new_tokens}, update=True)


def _lm(model: nn.Module, tokenizer: Any, batch_size: int, chat: bool) -> Any:
    from lm_eval.models.huggingface import HFLM

    quiet = logging.getLogger("lm_eval.models.huggingface")
    level = quiet.level
    quiet.setLevel(logging.ERROR)              # "pretrained is not a str" is the point here, not a problem
    try:
        # add_bos_token=False with a chat template: the template decides how a prompt starts, as in our scorer
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                    add_bos_token=False if chat else None)
    finally:
        quiet.setLevel(level)


def _set_seeds(task_dict: Mapping[str, Any], num_fewshot: Any) -> None:
    """What the harness's simple_evaluate does before evaluating: its default seeds (so few-shot examples
    are the ones other harness users get), shot counts."""
    import numpy as np
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)
    for task in task_dict["tasks"].values():
        default = task.get_config("num_fewshot")
        if num_fewshot is not None and default != 0:
            task.set_config("num_fewshot", int(num_fewshot))
        elif default is None:
            task.set_config("num_fewshot", 0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)


def flat_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """{"harness/<task>/<metric>[/<filter>]": value} of the harness's per-task and per-group results."""
    out: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, metrics in (results.get(section) or {}).items():
            for key, value in metrics.items():
                if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue                                   # alias, "N/A" stderr
                metric, filt = key.split(",", 1)
                out[f"harness/{task}/{metric}" + ("" if filt == "none" else f"/{filt}")] = float(value)
    for task, n in (results.get("n-samples") or {}).items():
        if isinstance(n, Mapping) and "effective" in n:
            out[f"harness/{task}/items"] = float(n["effective"])
    return out


def _save(results: Mapping[str, Any], info: Mapping[str, Any], run_dir: Path) -> Path:
    """Write results.json, task_configs/<task>.yaml, samples_<task>.jsonl into a fresh harness folder."""
    import yaml

    from apexlm.eval.settings import free_path

    folder = free_path(run_dir, "harness", "")
    (folder / "task_configs").mkdir(parents=True)
    keep = {k: results.get(k) for k in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
                                        "higher_is_better", "n-samples")}
    (folder / "results.json").write_text(json.dumps({**info, **keep}, indent=2, default=str) + "\n")
    for task, config in (results.get("configs") or {}).items():
        (folder / "task_configs" / f"{task}.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(
            config, default=str)), sort_keys=False, allow_unicode=True))
    for task, rows in (results.get("samples") or {}).items():
        (folder / f"samples_{task}.jsonl").write_text(
            "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows))
    return folder


def run_harness(plan: HarnessPlan, model: nn.Module, tokenizer: Any, run_dir: Path,
                batch_size: int) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    """(flat metrics, info for eval.json, the harness's raw results incl. samples) of one evaluation."""
    import lm_eval
    from lm_eval.evaluator import evaluate

    hs = plan.settings
    bs = int(hs.get("batch_size") or batch_size)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    device = str(next(model.parameters()).device)
    log.info("harness: lm-eval %s, tasks %s, batch size %d, dtype %s, device %s, chat template %s",
             lm_eval.__version__, ", ".join(requested_tasks(hs)), bs, dtype, device, plan.chat)
    was_training = model.training
    _set_seeds(plan.task_dict, hs.get("num_fewshot"))
    try:
        with offline_hub(bool(hs.get("offline", True))):
            lm = _lm(model, tokenizer, bs, plan.chat)
            results = evaluate(lm=lm, task_dict=plan.task_dict, limit=hs.get("limit"),
                               bootstrap_iters=int(hs.get("bootstrap_iters") or 0),
                               log_samples=bool(hs.get("log_samples", True)), apply_chat_template=plan.chat,
                               fewshot_as_multiturn=plan.chat,
                               confirm_run_unsafe_code=bool(hs.get("allow_code_execution")))
    finally:
        model.train(was_training)
    info = {"lm_eval_version": lm_eval.__version__, "tasks": requested_tasks(hs), "suite": hs.get("suite"),
            "batch_size": bs, "dtype": dtype, "device": device, "apply_chat_template": plan.chat,
            "offline": bool(hs.get("offline", True)), "limit": hs.get("limit"),
            "num_fewshot": hs.get("num_fewshot"), "metadata": plan.metadata}
    folder = _save(results or {}, info, run_dir)
    log.info("harness: results in %s", folder)
    return flat_metrics(results or {}), {**info, "dir": str(folder)}, dict(results or {})
