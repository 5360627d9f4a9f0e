"""Multiple choice: closed answer sets of the embedded tasks, and batch-independent log-likelihoods."""

from __future__ import annotations

import pytest

from apexlm.data.eval_items import load_eval_items
from apexlm.eval.multiple_choice import choice_sets, mc_items, sequence_logprobs
from tests.support.models import llama


def test_tasks_with_a_closed_answer_set() -> None:
    items = load_eval_items(None)
    sets = choice_sets(items, max_choices=10)
    assert sets["syllogism"] == ["No", "Yes"]
    assert "family_relationships" in sets and "basic_arithmetic" not in sets
    pairs = mc_items([{"task": "x", "answer": "b", "choices": ["a", "b", "c"]}], 10)
    assert pairs[0][1] == ["a", "b", "c"]


def test_logprobs_do_not_depend_on_batching() -> None:
    model = llama(hidden=32, heads=4, kv=2, ffn=40)
    examples = [([1, 2, 3, 4, 5], [-100, -100, 3, 4, 5]), ([7, 8, 9], [-100, 8, 9]), ([4, 4], [-100, 4])]
    one = sequence_logprobs(model, examples, batch_size=1, pad_id=0)
    three = sequence_logprobs(model, examples, batch_size=3, pad_id=0)
    assert three == pytest.approx(one, abs=1e-4)
    assert all(v < 0 for v in one)
