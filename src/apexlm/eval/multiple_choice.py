"""Multiple-choice accuracy by log-likelihood: pick the choice the model finds most probable as the answer.

None of the embedded reasoning-gym tasks ships choices, but some have a small, closed answer set: syllogism
(Yes/No), family_relationships (a kinship word) and letter_counting (a small count). For those, the choices
of an item are every distinct answer of its task among the eval items, and the model ranks them — a
generation-free signal that is less sensitive to formatting than exact match. Items that carry their own
`choices` list use it. A task qualifies when it has 2..max_choices distinct answers.

Score of a choice: the summed log-probability of the assistant turn "<choice><end-of-turn>" after the prompt
(the chat template's rendering, exactly as in training; `encode_chat` labels those tokens). Summed, not
length-normalised: the choices are short single words or numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from apexlm.data.chat import IGNORE_INDEX, encode_chat
from apexlm.data.instructions import prompt_messages
from apexlm.eval.exact_match import context_of


def choice_sets(items: Sequence[dict[str, Any]], max_choices: int) -> dict[str, list[str]]:
    """{task: sorted distinct answers} for tasks whose eval answers form a small closed set."""
    answers: dict[str, set[str]] = defaultdict(set)
    for item in items:
        answers[item["task"]].add(str(item["answer"]).strip())
    return {t: sorted(a) for t, a in answers.items() if 2 <= len(a) <= max_choices}


def mc_items(items: Sequence[dict[str, Any]], max_choices: int,
             pool: Sequence[dict[str, Any]] | None = None) -> list[tuple[dict[str, Any], list[str]]]:
    """(item, choices) pairs: an item's own `choices`, else its task's closed answer set among `pool`
    (default: `items`; pass all eval items so that a subset still sees every possible answer)."""
    sets = choice_sets(items if pool is None else pool, max_choices)
    out = []
    for item in items:
        own = item.get("choices")
        choices = [str(c) for c in own] if own else sets.get(item["task"])
        if choices and str(item["answer"]).strip() in choices:
            out.append((item, choices))
    return out


@torch.no_grad()
def sequence_logprobs(model: nn.Module, examples: Sequence[tuple[list[int], list[int]]], batch_size: int,
                      pad_id: int) -> list[float]:
    """Σ log p(token) over labelled positions of each (input_ids, labels) example; right-padded batches."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)              # (B, T)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)      # (B, T)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)                     # (B, T)
        for row, (x, y) in enumerate(chunk):
            ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)                          # (B, T-1, V)
        target = labels[:, 1:].to(device)                                             # (B, T-1)
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)       # (B, T-1)
        out.extend((picked * (target != IGNORE_INDEX)).sum(dim=1).double().cpu().tolist())
    return out


def multiple_choice(model: nn.Module, tokenizer, items: Sequence[dict[str, Any]], batch_size: int,
                    max_choices: int, pool: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
    """{"mc_accuracy": macro over tasks, "mc_accuracy/<task>", "mc_chance/<task>", "mc_items/<task>"};
    {} when no item has choices."""
    pairs = mc_items(items, max_choices, pool)
    if not pairs:
        return {}
    context = context_of(model)
    examples = []
    for item, choices in pairs:
        for choice in choices:
            ex = encode_chat(tokenizer, [*prompt_messages(item), {"role": "assistant", "content": choice}])
            ids, labels = ex.input_ids, ex.labels
            if context is not None and len(ids) > context:                 # keep the answer, drop the start
                ids, labels = ids[-context:], labels[-context:]
            examples.append((ids, labels))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model_was_training = model.training
    model.eval()
    try:
        scores = sequence_logprobs(model, examples, batch_size, pad)
    finally:
        model.train(model_was_training)
    per_task: dict[str, list[tuple[float, float]]] = defaultdict(list)   # (correct, chance) per item
    pos = 0
    for item, choices in pairs:
        vals = scores[pos:pos + len(choices)]
        pos += len(choices)
        pick = max(range(len(choices)), key=lambda j: vals[j])              # ties → the first choice
        per_task[item["task"]].append((float(choices[pick] == str(item["answer"]).strip()), 1 / len(choices)))
    metrics: dict[str, float] = {}
    for task in sorted(per_task):
        rows = per_task[task]
        metrics[f"mc_accuracy/{task}"] = sum(r[0] for r in rows) / len(rows)
        metrics[f"mc_chance/{task}"] = sum(r[1] for r in rows) / len(rows)
        metrics[f"mc_items/{task}"] = len(rows)
    accs = [metrics[f"mc_accuracy/{t}"] for t in per_task]
    metrics["mc_accuracy"] = sum(accs) / len(accs)
    return metrics
