"""Exact match by greedy generation: left padding gives the same tokens at batch size 1 and 8; scoring wiring."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import apexlm.eval.exact_match as em
from apexlm.data.chat import generation_prompt
from apexlm.data.eval_items import load_eval_items
from apexlm.data.instructions import prompt_messages
from apexlm.eval.exact_match import exact_match, items_per_task
from apexlm.eval.generation import cut_at_stop, fit_context, greedy_generate, left_pad
from apexlm.eval.loading import load_hf_model
from tests.support.micro_runs import micro_runs
from tests.support.models import llama


@pytest.fixture(scope="module")
def model_and_items():
    """The exported APEX micro model, with its weights jittered so that greedy outputs vary from token to
    token (after 4 steps it repeats one whitespace token, which would make batch equality trivial)."""
    model, tokenizer = load_hf_model(str(micro_runs()["apex"] / "export"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    items = items_per_task(load_eval_items(None), 2)        # 16 prompts of very different lengths
    return model, tokenizer, items


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_batch_size_1_and_8_generate_the_same(model_and_items) -> None:
    model, tokenizer, items = model_and_items
    prompts = [generation_prompt(tokenizer, prompt_messages(it)) for it in items]
    assert len({len(p) for p in prompts}) > 4                 # real left padding inside the batches of 8
    ids1 = greedy_generate(model, tokenizer, prompts, batch_size=1, max_new_tokens=10)
    ids8 = greedy_generate(model, tokenizer, prompts, batch_size=8, max_new_tokens=10)
    assert ids1 == ids8
    assert len({t for ids in ids1 for t in ids}) > 5          # varied outputs, not one repeated token
    one, r1 = exact_match(model, tokenizer, items, batch_size=1, max_new_tokens=10)
    eight, r8 = exact_match(model, tokenizer, items, batch_size=8, max_new_tokens=10)
    assert one == eight and [r["prediction"] for r in r1] == [r["prediction"] for r in r8]


def test_left_padding_and_stops() -> None:
    ids, mask = left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert cut_at_stop([4, 5, 2, 7], stops=[2, 3]) == [4, 5]
    assert fit_context(list(range(10)), 4, context=8) == ([6, 7, 8, 9], True)
    assert fit_context([1, 2], 4, context=None) == ([1, 2], False)


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_scoring_uses_each_tasks_scorer(model_and_items, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the reference answers as 'generations' every task scores 1.0; with junk, 0.0."""
    model, tokenizer, items = model_and_items
    answers = [tokenizer(it["answer"], add_special_tokens=False)["input_ids"] for it in items]
    monkeypatch.setattr(em, "greedy_generate", lambda *a, **k: answers)
    metrics, _ = exact_match(model, tokenizer, items, 8, 4)
    assert metrics["exact_match"] == 1.0 and all(metrics[f"exact_match/{it['task']}"] == 1.0 for it in items)
    monkeypatch.setattr(em, "greedy_generate", lambda *a, **k: [[] for _ in items])
    assert exact_match(model, tokenizer, items, 8, 4)[0]["exact_match"] == 0.0


def test_greedy_generate_stops_at_eos() -> None:
    """A head whose logits are a constant bias: eos favoured → nothing; another token → max_new_tokens of it."""
    model = llama(hidden=32, heads=4, kv=2, ffn=40)
    model.lm_head = torch.nn.Linear(32, 97, bias=True)
    tok = SimpleNamespace(eos_token_id=2, pad_token_id=0, all_special_ids=[0, 2, 3])
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[2] = 5.0
    assert greedy_generate(model, tok, [[10, 11, 12], [13]], batch_size=2, max_new_tokens=5) == [[], []]
    with torch.no_grad():
        model.lm_head.bias[7] = 9.0
    assert greedy_generate(model, tok, [[10, 11, 12], [13]], batch_size=2, max_new_tokens=5) == [[7] * 5] * 2
