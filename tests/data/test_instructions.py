"""reasoning-gym instructions: held-out eval questions, exact-match scoring with the task's scorer."""

from __future__ import annotations

import pytest

from apexlm.data.eval_items import load_eval_items
from apexlm.data.instructions import (
    TASKS,
    InstructionSizes,
    generate_splits,
    prompt_messages,
    score_answer,
)
from apexlm.errors import DataError


@pytest.fixture(scope="module")
def splits():
    return generate_splits(InstructionSizes(train=len(TASKS) * 10, val=len(TASKS), eval_per_task=3))


def test_splits_are_disjoint_and_deterministic(splits) -> None:
    train_q = {r["question"] for r in splits["train"]}
    assert not train_q & {r["question"] for r in splits["eval"] + splits["val"]}
    assert {r["task"] for r in splits["eval"]} == set(TASKS)
    again = generate_splits(InstructionSizes(train=len(TASKS) * 10, val=len(TASKS), eval_per_task=3))
    assert again == splits


def test_score_answer_reference_and_wrong(splits, tmp_path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "eval.jsonl", splits["eval"])
    items = load_eval_items(path)
    assert len(items) == len(TASKS) * 3
    for item in items:
        assert score_answer(item, item["answer"]) == 1.0, item["task"]
        assert score_answer(item, " " + item["answer"] + "\n") == 1.0
        assert score_answer(item, "definitely not the answer 123456789") == 0.0, item["task"]
        assert prompt_messages(item) == [{"role": "user", "content": item["question"]}]


def test_load_eval_items_errors(tmp_path, write_jsonl) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_eval_items(tmp_path / "missing.jsonl")
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    with pytest.raises(DataError, match="lacks task"):
        load_eval_items(path)
