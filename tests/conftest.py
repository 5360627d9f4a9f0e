"""Fixtures and collection hooks only; shared helpers live in tests/support (see its __init__)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.runs import MICRO  # importing tests.support.runs also sets APEXLM_ROOT and WANDB_MODE

# Micro models: one intra-op thread beats two (measured on the shared 2-core machine: APEX prepare of the micro
# model 0.05 s with one thread, 0.9 s with two), and results do not depend on how threads split a reduction.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need CUDA: without it they are skipped (reported as skipped with the reason, never passed)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Every test starts with one thread (a pipeline run sets its cfg.threads for the rest of the process)."""
    torch.set_num_threads(1)


@pytest.fixture
def micro_overrides(tmp_path: Path) -> list[str]:
    """The micro model with logs under tmp_path and the CSV logger."""
    return [*MICRO, f"paths.log_dir={tmp_path}/logs", "logger=csv"]
