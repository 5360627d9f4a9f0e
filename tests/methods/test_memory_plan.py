"""The per-device memory plan (methods/memory_plan.py, `python -m apexlm.budget --memory`).

Accounting checks on meta models (no allocation), the 7B placement the README states, and one real
measurement: a few CPU training steps of a small model must peak within 15 % of the plan.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from apexlm.methods import build_method
from apexlm.methods.memory_plan import GB, Setup, format_plan, method_saved_bytes, plan

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=160, max_position_embeddings=256)
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, intermediate_size=11008, tie_word_embeddings=False)


def meta(method: str, **arch: int) -> LlamaForCausalLM:
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**arch))
    return build_method({"name": method}, seed=0).prepare(model, assess_batches=None)


def cpu(strategy: str = "single", devices: int = 1, **kw: object) -> Setup:
    return Setup(strategy=strategy, devices=devices, seq=64, micro_batch=2, accelerator="cpu",
                 precision="32-true", **kw)


def test_state_accounting_full() -> None:
    model = meta("full", **SMALL)
    n = sum(p.numel() for p in model.parameters())
    single, ddp, fsdp = (plan(model, model.config, s) for s in (cpu(), cpu("ddp", 4), cpu("fsdp", 4)))
    assert single["weights"] == 4 * n and single["gradients"] == 4 * n and single["optimizer"] == 8 * n
    assert single["ddp_buckets"] == 0 and ddp["ddp_buckets"] == 4 * n
    assert fsdp["weights"] == pytest.approx(n) and fsdp["optimizer"] == pytest.approx(2 * n)
    assert fsdp["fsdp_unsharded"] > 0 and ddp["per_device"] > single["per_device"]


def test_activations_scale_with_tokens_and_checkpointing_cuts_them() -> None:
    model = meta("full", **SMALL)
    a1 = plan(model, model.config, cpu())["activations"]
    a2 = plan(model, model.config, Setup("single", 1, 128, 2, "cpu", "32-true"))["activations"]
    assert a2 == pytest.approx(2 * a1, rel=0.01)
    ck = plan(model, model.config, cpu(checkpointing=True))
    assert ck["activations"] == ck["activations_ckpt"] < ck["activations_no_ckpt"]


def test_method_saved_bytes_split_weight_side_and_per_token() -> None:
    plain, apex, lora = meta("full", **SMALL), meta("apex", **SMALL), meta("lora", **SMALL)
    assert method_saved_bytes(plain.model.layers[0]) == (0, 0)  # nn.Linear keeps only its input
    # the span form (method §3.7) rebuilds its mixed rows in backward: nothing saved beyond the plain layer
    assert method_saved_bytes(apex.model.layers[0]) == (0, 0)
    assert method_saved_bytes(lora.base_model.model.model.layers[0]) == (0, 7 * 16 * 4)  # x·A, r=16, 7 linears


@pytest.fixture(scope="module")
def seven_b() -> dict[str, LlamaForCausalLM]:
    return {m: meta(m, **LLAMA2_7B) for m in ("apex", "full")}


@pytest.mark.parametrize("method", ["apex", "full"])
def test_llama2_7b_fits_fsdp_not_ddp(method: str, seven_b: dict) -> None:
    """The README's placement: 8 x 80 GB at seq 4096, micro-batch 1, checkpointing on (the model config)."""
    model = seven_b[method]
    gpu = dict(devices=8, seq=4096, micro_batch=1, checkpointing=True)
    fsdp, ddp = Setup("fsdp", **gpu), Setup("ddp", **gpu)
    assert plan(model, model.config, fsdp)["per_device"] / GB <= 70
    p = plan(model, model.config, ddp)
    lines = format_plan(p, ddp, capacity_gb=80)
    assert p["per_device"] / GB > 80 and lines[-1].startswith("per_device_gb=")
    assert any(line.startswith("does not fit 80 GB") and "fsdp" in line for line in lines)


def test_plan_matches_measured_peak_on_cpu() -> None:
    """A real measurement: bench_memory's CPU peak (allocator events) of 3 steps vs the plan, within 15 %."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_memory import measure, prepared

    torch.set_num_threads(1)
    for method in ("full", "apex"):
        model, _ = prepared("micro", method, torch.device("meta"), False)
        planned = plan(model, model.config, Setup("single", 1, 128, 4, "cpu", "32-true"))["per_device"]
        measured = measure("micro", method, torch.device("cpu"), 3, 4, 128, False)
        assert 0.85 <= planned / measured <= 1.15, (method, planned, measured)


@pytest.mark.parametrize("model", ["hf", "llama2_7b", "tinyllama_1b"])
def test_hub_model_configs_checkpoint_by_default(model: str) -> None:
    """The 7B placement assumes it (builders.build_model calls gradient_checkpointing_enable; APEX's scores
    count a recomputed layer once: tests/apex/test_scoring.py::test_gradient_checkpoint_recompute_not_counted_twice)."""
    import yaml

    assert yaml.safe_load((ROOT / "configs" / "model" / f"{model}.yaml").read_text())["gradient_checkpointing"]
