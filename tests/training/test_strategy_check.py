"""Unsupported strategy x method x device combinations stop before training (training/strategy_check.py).

In-process checks of `check_strategy` on the composed configs; the same cases through `python train.py` (exit 2,
one `error:` line, no traceback, nothing written) are in tests/reliability/test_bad_inputs.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from apexlm.errors import ConfigError
from apexlm.methods import build_method
from apexlm.training.strategy_check import check_strategy, processes
from tests.support.runs import MICRO, compose_cfg

BASE = ["experiment=full_it", "debug=fdr", *MICRO, "threads=1", "logger=none"]
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
CPU_FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.precision=32-true"]

BAD = [  # (id, overrides, phrase of the one error line)
    ("deepspeed_apex", [*BASE, "method=apex", "trainer=deepspeed"], "use trainer=fsdp"),
    ("deepspeed_hft", [*BASE, "method=hft", "trainer=deepspeed"], "cannot run method=hft"),
    ("deepspeed_gmt", [*BASE, "method=gmt", "trainer=deepspeed"], "masks p.grad"),
    ("deepspeed_on_cpu", [*BASE, "trainer=deepspeed", "trainer.accelerator=cpu"], "needs GPUs"),
    ("fsdp_cpu_one_device", [*BASE, *CPU_FSDP, "trainer.devices=1"], "trainer.devices=2"),
    ("unknown_strategy", [*BASE, "trainer.strategy=horovod"], "trainer.strategy=horovod is unknown"),
    ("bad_num_nodes", [*BASE, "trainer.num_nodes=0"], "trainer.num_nodes=0"),
    ("hft_requires_grad_ddp", [*BASE, "method=hft", "trainer=ddp", "trainer.accelerator=cpu",
                               "trainer.devices=2"], "method.freeze=mask"),
]
if not HAS_DEEPSPEED:  # the GPU is checked after the package: this machine has neither
    BAD.append(("deepspeed_missing", [*BASE, "trainer=deepspeed"], "pip install deepspeed"))


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_check_strategy_refuses(case: tuple, tmp_path: Path) -> None:
    _, overrides, phrase = case
    with pytest.raises(ConfigError) as info:
        check_strategy(compose_cfg(overrides, tmp_path))
    assert phrase in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("overrides", [
    [*BASE, "method=apex", *CPU_FSDP, "trainer.devices=2"],
    [*BASE, "method=apex", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    [*BASE, "method=hft", "method.freeze=mask", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    [*BASE, "method=lora", "trainer.num_nodes=1"],
])
def test_check_strategy_accepts(overrides: list[str], tmp_path: Path) -> None:
    check_strategy(compose_cfg(overrides, tmp_path))


def test_capability_lives_on_the_method_classes() -> None:
    names = ("full", "apex", "s2", "lora", "hft", "gmt")
    rewrites = {n: build_method({"name": n}).rewrites_weights_in_place for n in names}
    grads = {n: build_method({"name": n}).edits_gradients for n in names}
    assert rewrites == {"full": False, "apex": True, "s2": True, "lora": False, "hft": True, "gmt": False}
    assert grads == {"full": False, "apex": False, "s2": False, "lora": False, "hft": True, "gmt": True}


def test_processes_counts_devices_times_nodes(tmp_path: Path) -> None:
    cfg = compose_cfg([*BASE, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                       "trainer.num_nodes=3"], tmp_path)
    assert processes(cfg.trainer) == 6
