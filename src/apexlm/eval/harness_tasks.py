"""The offline lm-evaluation-harness tasks shipped with apexlm, and the named suites of harness tasks.

The task YAMLs live in `apexlm/eval/tasks/` (installed with the package). They read no dataset from a hub:
their `custom_dataset` functions below build the documents from the embedded held-out reasoning-gym items
(`apexlm.data.eval_items.load_eval_items`), picking exactly the items apexlm's own scorers pick:

  apexlm_rg_<task>  generate_until; scored by the task's own reasoning-gym scorer (`score_answer`, full
                    credit = exact_match, as `apexlm.eval.exact_match`), its partial credit (`score`), and
                    plain string equality (`exact_match_strict`); group `apexlm_rg` = macro average;
  apexlm_mc_<task>  multiple_choice over the task's closed answer set with the choices and order of
                    `apexlm.eval.multiple_choice.mc_items`; group `apexlm_mc` = macro average.

What to read comes from the harness's task metadata, which `apexlm.eval.harness` fills (`apexlm_items`: the
eval items file or data dir, `apexlm_max_items`: items per task, `apexlm_mc_max_choices`,
`apexlm_choice_suffix`: the end-of-turn text appended to every choice when the chat template is applied).
Without it (a plain `lm_eval --include_path <this dir>`), all items of the default data folder are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from apexlm.errors import DataError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
SHIPPED_PREFIX = "apexlm_"

# The harness tasks closest to the paper's instruction-tuning evaluation (MMLU, GSM8K, BBH, TyDiQA, TruthfulQA,
# HumanEval). Shot counts are each task's harness default (mmlu 0, gsm8k_cot 8 chain-of-thought, bbh_cot_fewshot
# 3 chain-of-thought, tydiqa_goldp 0, truthfulqa_mc2 0, humaneval 0, pass@1 greedy); the paper's exact
# settings are not known to this project, so compare against the paper's trends, not its absolute numbers.
SUITES: dict[str, tuple[str, ...]] = {
    "paper_it": ("mmlu", "gsm8k_cot", "bbh_cot_fewshot", "tydiqa_goldp", "truthfulqa_mc2", "humaneval"),
}


def suite_tasks(name: str) -> list[str]:
    """The harness task names of a named suite (ConfigError for an unknown name)."""
    from apexlm.errors import ConfigError

    if name not in SUITES:
        raise ConfigError(f"eval.harness.suite={name} is unknown; choose one of {', '.join(SUITES)}")
    return list(SUITES[name])


def _items(rg_task: str, source: Any, max_items: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the first `max_items` eval items of `rg_task` in file order, all eval items)."""
    from apexlm.data.eval_items import load_eval_items
    from apexlm.eval.exact_match import items_per_task

    all_items = load_eval_items(str(source) if source else None)
    chosen = [i for i in items_per_task(all_items, int(max_items) if max_items else None) if i["task"] == rg_task]
    if not chosen:
        raise DataError(f"task data not available offline: the eval items hold no {rg_task!r} items; "
                        "use the embedded items (eval.items_path=null) or a file that has them")
    return chosen, all_items


def _dataset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


def rg_dataset(rg_task: str, apexlm_items: Any = None, apexlm_max_items: Any = None,
               **_: Any) -> dict[str, Any]:
    """{"test": Dataset} of one reasoning-gym task: question, answer and the whole item as JSON (for the
    scorer: nested metadata differs between tasks, so it travels as one string column)."""
    chosen, _all = _items(rg_task, apexlm_items, apexlm_max_items)
    return _dataset([{"task": i["task"], "question": i["question"], "answer": i["answer"],
                      "item": json.dumps(i, ensure_ascii=False)} for i in chosen])


def rg_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Per-document metrics of an apexlm_rg task from the generated text (before the first stop)."""
    from apexlm.data.instructions import partial_score, score_answer

    item = json.loads(doc["item"])
    prediction = results[0] if results else ""
    return {"exact_match": score_answer(item, prediction), "score": partial_score(item, prediction),
            "exact_match_strict": float(prediction.strip() == str(item["answer"]).strip())}


def mc_dataset(rg_task: str, apexlm_items: Any = None, apexlm_max_items: Any = None,
               apexlm_mc_max_choices: Any = 10, apexlm_choice_suffix: str = "", **_: Any) -> dict[str, Any]:
    """{"test": Dataset} of one closed-answer-set task: question, choices (+ suffix), gold index."""
    from apexlm.eval.multiple_choice import mc_items

    chosen, all_items = _items(rg_task, apexlm_items, apexlm_max_items)
    pairs = mc_items(chosen, int(apexlm_mc_max_choices or 10), pool=all_items)
    if not pairs:
        raise DataError(f"task data not available offline: {rg_task!r} has no closed answer set of "
                        f"2..{apexlm_mc_max_choices} answers in the eval items; raise eval.mc_max_choices")
    suffix = str(apexlm_choice_suffix or "")
    return _dataset([{"task": item["task"], "question": item["question"], "answer": item["answer"],
                      "choices": [c + suffix for c in choices],
                      "gold": choices.index(str(item["answer"]).strip())} for item, choices in pairs])
