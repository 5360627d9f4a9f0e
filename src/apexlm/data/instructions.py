"""Instruction tuning and exact-match evaluation data from reasoning-gym's seeded generators.

reasoning-gym (Apache-2.0) ships procedural task generators with their own answer scorers, so the
same package yields unlimited SFT conversations and a held-out exact-match benchmark offline. We use
tasks with short answers that generate fast. Each split draws from its own seed range, and val/eval
items whose question also occurs in train are skipped, so evaluation never sees training questions.

Record layout (one JSON object per line):
    {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
     "task": name, "question": ..., "answer": ..., "metadata": {...}, "rg_seed": s, "rg_index": i}
`score_answer(item, prediction)` rebuilds the task's dataset object to call its scorer (cached) and
turns its score into exact match (1.0 only for full credit).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apexlm.errors import DataError

TASKS: tuple[str, ...] = (
    "basic_arithmetic",
    "chain_sum",
    "gsm_symbolic",
    "letter_counting",
    "word_sorting",
    "syllogism",
    "family_relationships",
    "spell_backward",
)
SPLIT_SEEDS: dict[str, int] = {"train": 10_000, "val": 20_000, "eval": 30_000}
ORIGIN = "reasoning-gym procedural generators (tasks: " + ", ".join(TASKS) + ")"
LICENSE = "Apache-2.0 (reasoning-gym)"
_OVERDRAW = 2  # generate this many times the need, so that skipped duplicates can be replaced


@dataclass(frozen=True)
class InstructionSizes:
    """How many items to make: train and val in total (spread over tasks), eval per task."""

    train: int = 4000
    val: int = 200
    eval_per_task: int = 50


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def to_record(task: str, entry: dict[str, Any], seed: int, index: int) -> dict[str, Any]:
    """A chat record for one reasoning-gym entry (keeps what the scorer needs)."""
    question, answer = str(entry["question"]), str(entry["answer"])
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "task": task,
        "question": question,
        "answer": answer,
        "metadata": _json_safe(entry.get("metadata", {})),
        "rg_seed": seed,
        "rg_index": index,
    }


def _per_task(total: int, tasks: Sequence[str]) -> list[int]:
    base, extra = divmod(total, len(tasks))
    return [base + (i < extra) for i in range(len(tasks))]


def generate_task(task: str, count: int, seed: int, exclude: set[str]) -> list[dict[str, Any]]:
    """`count` records of `task` from seed `seed`, skipping questions in `exclude` (and repeats)."""
    import reasoning_gym

    if count == 0:
        return []
    dataset = reasoning_gym.create_dataset(task, size=count * _OVERDRAW, seed=seed)
    out, seen = [], set(exclude)
    for index in range(len(dataset)):
        entry = dataset[index]
        if entry["question"] in seen or entry.get("answer") is None:
            continue
        seen.add(entry["question"])
        out.append(to_record(task, entry, seed, index))
        if len(out) == count:
            return out
    raise DataError(
        f"reasoning-gym task {task!r} gave only {len(out)} distinct items of {count}; "
        "ask for fewer instructions"
    )


def generate_splits(sizes: InstructionSizes, tasks: Sequence[str] = TASKS) -> dict[str, list[dict[str, Any]]]:
    """{"train", "val", "eval"} record lists; val/eval questions never appear in train."""
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "eval": []}
    counts = {
        "train": _per_task(sizes.train, tasks),
        "val": _per_task(sizes.val, tasks),
        "eval": [sizes.eval_per_task] * len(tasks),
    }
    for t, task in enumerate(tasks):
        used: set[str] = set()
        for split in ("train", "val", "eval"):
            records = generate_task(task, counts[split][t], SPLIT_SEEDS[split] + t, used)
            used.update(r["question"] for r in records)
            splits[split].extend(records)
    return splits


def prompt_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    """The item's conversation without its final assistant turn (the reference answer)."""
    msgs = list(item["messages"])
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    return msgs


@functools.lru_cache(maxsize=None)
def _scorer(task: str) -> Any:
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(task, size=1, seed=0)
    except Exception as err:
        raise DataError(f"unknown reasoning-gym task {task!r} ({err}); check the eval items") from None


def partial_score(item: dict[str, Any], prediction: str) -> float:
    """The task's own reasoning-gym score in [0, 1]; some tasks give partial credit (e.g. 0.01 for a
    well-formed wrong number, letter overlap for spelled words)."""
    entry = {"question": item["question"], "answer": item["answer"], "metadata": item.get("metadata", {})}
    try:
        return float(_scorer(item["task"]).score_answer(prediction.strip(), entry))
    except DataError:
        raise
    except Exception:  # a scorer may choke on malformed predictions: that is a wrong answer
        return 0.0


def score_answer(item: dict[str, Any], prediction: str) -> float:
    """Exact match by the task's own scorer: 1.0 when it gives full credit, else 0.0."""
    return 1.0 if partial_score(item, prediction) >= 1.0 - 1e-9 else 0.0
