"""Exact-match accuracy by greedy generation on held-out instruction items, scored by each task's scorer.

Items come from `apexlm.data.eval_items.load_eval_items` (reasoning-gym tasks with their own scorers;
any JSONL with messages/task/question/answer works). The prompt is the conversation without its reference
answer, rendered with the tokenizer's chat template plus the assistant header; the generated text (up to
the first stop token) is scored by `score_answer` (1.0 only for full credit). Reported per task and as the
macro average over tasks, so a task with more items does not dominate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch import nn

from apexlm.data.chat import generation_prompt
from apexlm.data.instructions import prompt_messages, score_answer
from apexlm.eval.generation import fit_context, greedy_generate


def items_per_task(items: Sequence[dict[str, Any]], max_per_task: int | None) -> list[dict[str, Any]]:
    """The first `max_per_task` items of each task, in file order (all when None)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for item in items:
        if max_per_task is None or seen[item["task"]] < max_per_task:
            seen[item["task"]] += 1
            out.append(item)
    return out


def context_of(model: nn.Module) -> int | None:
    """The model's maximum sequence length, if its config states one."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if value else None


def exact_match(model: nn.Module, tokenizer, items: Sequence[dict[str, Any]], batch_size: int,
                max_new_tokens: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """({"exact_match": macro, "exact_match/<task>": …, "items/<task>": n, "truncated_prompts": k},
    one record per item with its prediction and score)."""
    context = context_of(model)
    prompts, truncated = [], 0
    for item in items:
        ids, cut = fit_context(generation_prompt(tokenizer, prompt_messages(item)), max_new_tokens, context)
        prompts.append(ids)
        truncated += cut
    outputs = greedy_generate(model, tokenizer, prompts, batch_size, max_new_tokens)
    per_task: dict[str, list[float]] = defaultdict(list)
    records = []
    for item, new_ids in zip(items, outputs, strict=True):
        text = tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        score = score_answer(item, text)
        per_task[item["task"]].append(score)
        records.append({"task": item["task"], "question": item["question"], "answer": item["answer"],
                        "prediction": text, "exact_match": score})
    metrics: dict[str, float] = {}
    for task in sorted(per_task):
        metrics[f"exact_match/{task}"] = sum(per_task[task]) / len(per_task[task])
        metrics[f"items/{task}"] = len(per_task[task])
    accs = [metrics[f"exact_match/{t}"] for t in per_task]
    metrics["exact_match"] = sum(accs) / len(accs) if accs else float("nan")
    metrics["truncated_prompts"] = truncated
    return metrics, records
