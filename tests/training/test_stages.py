"""Stage boundaries and the stage-aware LR curve (method §6)."""

from __future__ import annotations

import math

import pytest

from apexlm.errors import ConfigError
from apexlm.methods.schedule import lr_factor, stage_boundaries


def test_equal_splits_and_no_boundary_at_the_end() -> None:
    assert stage_boundaries(100, 1) == []
    assert stage_boundaries(100, 2) == [50]
    assert stage_boundaries(100, 3) == [34, 68]
    assert stage_boundaries(10, 4) == [3, 6, 9]
    assert stage_boundaries(4, 3) == [1, 2]  # ceil(4/3)=2 would give only 2 stages
    assert stage_boundaries(100, 5, explicit=[70, 20]) == [20, 70]


@pytest.mark.parametrize("stages,steps", [(0, 10), (11, 10)])
def test_impossible_stage_counts(stages: int, steps: int) -> None:
    with pytest.raises(ConfigError, match="stages"):
        stage_boundaries(steps, stages)


def test_continue_is_one_warmup_cosine() -> None:
    f = [lr_factor(s, 100, 0.1, [50], "continue") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_restart_starts_a_new_cosine_from_the_boundary_lr() -> None:
    total, b = 1000, 500
    cont = [lr_factor(s, total, 0.03, [b], "continue") for s in range(total)]
    rest = [lr_factor(s, total, 0.03, [b], "restart", restart_warmup_ratio=0.01) for s in range(total)]
    assert rest[:b] == cont[:b]
    peak = cont[b]  # LR the first stage had reached at the boundary
    warm = int(0.01 * (total - b))
    assert rest[b] == pytest.approx(peak / warm)  # fresh warmup from ~0
    assert rest[b + warm - 1] == pytest.approx(peak)
    assert rest[b + warm] == pytest.approx(peak)  # then a full half-cosine down to 0 over the remainder
    assert rest[750] > cont[750]  # the restart keeps the LR higher late in training
    assert rest[-1] < 1e-3


def test_unknown_policy() -> None:
    with pytest.raises(ConfigError, match="stage_lr"):
        lr_factor(0, 10, 0.0, [5], "sometimes")
