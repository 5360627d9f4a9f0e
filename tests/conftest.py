"""Fixtures and collection hooks only; shared helpers live in tests/support (see its __init__)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.runs import MICRO  # importing tests.support.runs also sets APEXLM_ROOT and WANDB_MODE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need CUDA: without it they are skipped (reported as skipped with the reason, never passed)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def micro_overrides(tmp_path: Path) -> list[str]:
    """The micro model with logs under tmp_path and the CSV logger."""
    return [*MICRO, f"paths.log_dir={tmp_path}/logs", "logger=csv"]
