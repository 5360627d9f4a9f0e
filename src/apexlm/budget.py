"""Trainable-parameter budget of a method on a model, without allocating weights (meta device).

    python -m apexlm.budget model=llama2_7b method=apex [method.k_ratio=0.125 ...]
    python -m apexlm.budget --all model=tiny       # one line per method config
    python -m apexlm.budget --pairs model=tiny     # the matched-budget experiment pairs, side by side
    python -m apexlm.budget model=llama2_7b method=apex --memory --devices 8 --strategy fsdp --seq 4096 \
        --micro-batch 1                            # per-device memory plan (apexlm.methods.memory_plan)

Prints a small table and ends with `trainable_fraction=<float>`. Uses the same config groups and the same
`Method.prepare` as training, so the number is the one a real run would log. `--pairs` composes the paired
experiments on the chosen model, solves the LoRA rank that matches the low-budget APEX arm there, and ends
with one `pair_match[<pair>]=<smaller/larger trainable count>` line per pair. `--memory` ends with
`per_device_gb=<float>`; its options: --devices N, --strategy single|ddp|fsdp, --seq L, --micro-batch B,
--accelerator gpu|cpu, --precision bf16-mixed|32-true (default: bf16-mixed on gpu, 32-true on cpu),
--checkpointing on|off (default: the model config's gradient_checkpointing), --capacity-gb G (default 80).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from apexlm.errors import UserError
from apexlm.methods import build_method
from apexlm.methods.base import count_params
from apexlm.models.builders import TINY_KEYS, check_supported

ROOT = Path(__file__).resolve().parents[2]


def arch_config(model_cfg: DictConfig, vocab_size: int = 8192) -> PretrainedConfig:
    """A `model` config's architecture: its `arch` block, the tiny sizes, or a local dir's config.json."""
    if model_cfg.get("arch"):
        arch = OmegaConf.to_container(model_cfg.arch, resolve=True)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    if model_cfg.get("kind") == "tiny":
        kw = {k: model_cfg[k] for k in TINY_KEYS if model_cfg.get(k) is not None}
        return AutoConfig.for_model("llama", vocab_size=vocab_size, **kw)
    if model_cfg.get("pretrained"):
        return AutoConfig.from_pretrained(str(model_cfg.pretrained))
    raise UserError("this model config has no `arch` block and no model.pretrained to read a config from")


def meta_model(cfg: DictConfig) -> tuple[Any, PretrainedConfig, int]:
    """The run's model prepared by its method on the meta device: (model, HF config, plain parameter count)."""
    config = arch_config(cfg.model)
    check_supported(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base_total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    method = build_method(cfg.method, seed=int(cfg.get("seed", 0)))
    return method.prepare(model, assess_batches=None), config, base_total


def budget(cfg: DictConfig) -> dict[str, Any]:
    model, _, base_total = meta_model(cfg)
    trainable, total = count_params(model)
    return {"method": str(cfg.method.name), "model_params": base_total, "trainable_params": trainable,
            "total_params_with_operators": total, "trainable_fraction": trainable / base_total}


# Matched-budget pairs (APEX ~52 % vs HFT ~50 % vs full; low-budget APEX vs LoRA at a matched rank).
PAIRS: dict[str, list[str]] = {
    "half": ["experiment=apex_it", "experiment=hft_it", "experiment=full_it"],
    "low": ["experiment=apex_lowbudget_it", "experiment=lora_it"],
}


def compose_budget(overrides: list[str]) -> dict[str, Any]:
    """Budget of the train config composed with `overrides` (Hydra must be initialised)."""
    from hydra import compose

    return budget(compose(config_name="train", overrides=overrides))


def matched_lora_rank(target: int, overrides: list[str]) -> int:
    """The LoRA rank whose trainable count is closest to `target` (LoRA's count is affine in r)."""
    one, two = (compose_budget([*overrides, f"method.r={r}"])["trainable_params"] for r in (1, 2))
    per_rank, fixed = two - one, 2 * one - two
    return max(1, round((target - fixed) / per_rank))


def print_pairs(model_overrides: list[str]) -> None:
    groups = {pair: [(arm, compose_budget([arm, *model_overrides])) for arm in arms]
              for pair, arms in PAIRS.items()}
    low_apex = groups["low"][0][1]["trainable_params"]  # the low pair's first arm is the APEX one
    lora_args = ["experiment=lora_it", *model_overrides]
    rank = matched_lora_rank(low_apex, lora_args)
    solved = compose_budget([*lora_args, f"method.r={rank}"])
    groups["low"].append((f"experiment=lora_it method.r={rank}", solved))
    total = solved["model_params"]
    print(f"matched budgets, {' '.join(model_overrides) or 'default model'} ({total:,} parameters)")
    print(f"{'pair':<6}{'arm':<40}{'trainable':>14}{'fraction':>10}{'x first':>9}")
    for pair, group in groups.items():
        first = group[0][1]["trainable_params"]
        for arm, r in group:
            print(f"{pair:<6}{arm:<40}{r['trainable_params']:>14,}{r['trainable_fraction']:>10.4f}"
                  f"{r['trainable_params'] / first:>9.3f}")
    for pair, group in groups.items():
        (_, a), (_, b) = group[:2]
        print(f"pair_match[{pair}]={_match(a['trainable_params'], b['trainable_params']):.4f}")
    print(f"pair_match[low_r{rank}]={_match(low_apex, solved['trainable_params']):.4f}")


def _match(a: int, b: int) -> float:
    """Smaller over larger trainable count: 1.0 = identical budgets; >= 0.9 = within 10 %."""
    return min(a, b) / max(a, b)


def print_all(overrides: list[str]) -> None:
    methods = sorted(p.stem for p in (ROOT / "configs" / "method").glob("*.yaml"))
    for name in methods:
        r = compose_budget([*overrides, f"method={name}"])
        print(f"{name:<8}{r['trainable_params']:>16,} / {r['model_params']:,}  "
              f"trainable_fraction={r['trainable_fraction']:.4f}")


MEMORY_FLAGS = {"--devices": "1", "--strategy": "single", "--seq": None, "--micro-batch": "1",
                "--accelerator": "gpu", "--precision": None, "--checkpointing": None, "--capacity-gb": "80"}


def memory_args(args: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Split `--flag value` / `--flag=value` memory options from the Hydra overrides."""
    opts, rest, it = dict(MEMORY_FLAGS), [], iter(args)
    for a in it:
        key, _, value = a.partition("=")
        if key in MEMORY_FLAGS:
            opts[key] = value or next(it, None)
            if opts[key] is None:
                raise UserError(f"{key} needs a value")
        elif a.startswith("--"):
            raise UserError(f"unknown option {a}; --memory takes {', '.join(MEMORY_FLAGS)}")
        else:
            rest.append(a)
    return opts, rest


def print_memory(args: list[str]) -> None:
    from hydra import compose

    from apexlm.methods.memory_plan import Setup, format_plan, plan

    opts, overrides = memory_args(args)
    cfg = compose(config_name="train", overrides=overrides)
    try:
        accel = str(opts["--accelerator"])
        ckpt = opts["--checkpointing"]
        setup = Setup(strategy=str(opts["--strategy"]), devices=int(opts["--devices"]),
                      seq=int(opts["--seq"] or cfg.data.get("block_size") or 512),
                      micro_batch=int(opts["--micro-batch"]), accelerator=accel,
                      precision=str(opts["--precision"] or ("bf16-mixed" if accel == "gpu" else "32-true")),
                      checkpointing=bool(cfg.model.get("gradient_checkpointing")) if ckpt is None else ckpt == "on")
        model, config, _ = meta_model(cfg)
        lines = format_plan(plan(model, config, setup), setup, float(opts["--capacity-gb"]))
    except ValueError as e:
        raise UserError(f"--memory: {e}") from None
    print("\n".join(lines))


def main(argv: list[str]) -> int:
    from hydra import initialize_config_dir

    os.environ.setdefault("APEXLM_ROOT", str(ROOT))
    mode = next((a for a in argv if a in ("--pairs", "--all", "--memory")), None)
    args = [a for a in argv if a != mode]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        try:
            if mode == "--memory":
                print_memory(args)
                return 0
            if mode == "--pairs":
                print_pairs(args)
                return 0
            if mode == "--all":
                print_all(args)
                return 0
            res = compose_budget(args)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"{'method':<28}{res['method']}")
    print(f"{'model parameters':<28}{res['model_params']:,}")
    print(f"{'trainable parameters':<28}{res['trainable_params']:,}")
    print(f"{'with operators (total)':<28}{res['total_params_with_operators']:,}")
    print(f"trainable_fraction={res['trainable_fraction']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
