"""Perplexity: token-weighted over the split; the exported model reproduces the run's final val ppl."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from apexlm.eval.checkpoint import model_from_checkpoint
from apexlm.eval.loading import load_hf_model
from apexlm.eval.perplexity import split_perplexity
from apexlm.eval.run_eval import run_val_loader
from apexlm.models.module import token_loss_sum
from apexlm.models.tokenizer import load_run_tokenizer
from tests.support.micro_runs import micro_runs
from tests.support.models import llama

VAL_BATCHES = 2  # debug=fdr validates on trainer.limit_val_batches=2 batches


def test_token_weighted_not_mean_of_batches() -> None:
    model = llama(hidden=32, heads=4, kv=2, ffn=40)
    g = torch.Generator().manual_seed(0)
    long = {"input_ids": torch.randint(0, 97, (2, 12), generator=g)}
    short = {"input_ids": torch.randint(0, 97, (1, 4), generator=g)}
    with torch.no_grad():
        sums = [token_loss_sum(model(input_ids=b["input_ids"]).logits, b["input_ids"]) for b in (long, short)]
    expected = sum(float(s) for s, _ in sums) / sum(int(c) for _, c in sums)
    res = split_perplexity(model, [long, short])
    assert res["tokens"] == 2 * 11 + 3 and res["loss"] == pytest.approx(expected, rel=1e-6)
    assert res["ppl"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert split_perplexity(model, [long, short], max_batches=1)["tokens"] == 22


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
@pytest.mark.parametrize("name", ["full", "apex"])
def test_exported_model_reproduces_final_val_perplexity(name: str) -> None:
    run_dir = micro_runs()[name]
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model, tokenizer, = load_hf_model(str(run_dir / "export"))
    res = split_perplexity(model, run_val_loader(cfg, tokenizer), VAL_BATCHES)
    assert res["loss"] == pytest.approx(summary["final_val_loss"], abs=1e-4)
    assert abs(math.log(res["ppl"]) - math.log(summary["final_val_ppl"])) < 1e-4
    in_run = json.loads((run_dir / "eval.json").read_text())        # evaluate_model at the end of training
    assert in_run["ppl/val"] == pytest.approx(res["ppl"], rel=1e-6)
    assert "exact_match" in in_run and "ppl/shakespeare" in in_run


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_checkpoint_rebuild_matches_the_export() -> None:
    """No export: the last checkpoint is rebuilt (APEX wrappers from their saved state), fused, evaluated."""
    run_dir = micro_runs()["apex"]
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    ckpt = sorted(run_dir.rglob("*.ckpt"))[-1]
    tokenizer = load_run_tokenizer(cfg)
    rebuilt = model_from_checkpoint(cfg, ckpt, tokenizer)
    exported, _ = load_hf_model(str(run_dir / "export"))
    loader = run_val_loader(cfg, tokenizer)
    a = split_perplexity(rebuilt, loader, VAL_BATCHES)["loss"]
    b = split_perplexity(exported, loader, VAL_BATCHES)["loss"]
    assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.parametrize("limit,expected", [(None, None), (1.0, None), (20, 20), (0.25, 10), (0.01, 1), (0, 8)])
def test_val_ppl_reads_as_many_batches_as_the_trainer(limit: float | None, expected: int | None) -> None:
    from apexlm.eval.run_eval import val_batches

    assert val_batches({"trainer": {"limit_val_batches": limit}}, 40, cap=8) == expected
