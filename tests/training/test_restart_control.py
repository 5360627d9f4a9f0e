"""The restart-only control (`full_restart_cpt`) runs exactly APEX's stage schedule with no operators.

Both experiments are trained for a few steps on the micro model; the CSV logs must show the same learning
rate at every step (every param group, scaled by its own multiplier) and Adam state dropped at the same steps.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tests.support.runs import MICRO, run_in_process

pytestmark = pytest.mark.slow  # three 12-step training runs

STEPS = 12  # three stages -> boundaries after steps 4 and 8
COMMON = [*MICRO, "logger=csv", "trainer.max_steps=12", "trainer.log_every_n_steps=1",
          "trainer.limit_val_batches=0", "callbacks.checkpoint.enabled=false", "trainer.enable_progress_bar=false",
          "data.max_train_samples=200", "data.max_val_samples=16"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _lr_curve(rows: list[dict[str, str]], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r.get(column)]


def _resets(rows: list[dict[str, str]]) -> dict[int, float]:
    return {int(r["step"]): float(r["stage/optimizer_states_reset"]) for r in rows
            if r.get("stage/optimizer_states_reset")}


def _train(experiment: str, tmp_path: Path, extra: list[str] = ()) -> list[dict[str, str]]:
    run_dir = tmp_path / experiment
    run_in_process([f"experiment={experiment}", *COMMON, f"paths.log_dir={tmp_path}/logs", *extra], run_dir)
    return _rows(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("restart")
    return {"apex": _train("apex_cpt", tmp, ["method.assess_samples=8", "method.mixer_lr_scale=3"]),
            "control": _train("full_restart_cpt", tmp), "vanilla": _train("full_cpt", tmp)}


def test_control_has_apex_lr_curve_step_by_step(runs: dict[str, list[dict[str, str]]]) -> None:
    apex_cols = [c for c in runs["apex"][0] if c.startswith("lr-")]
    ctrl = _lr_curve(runs["control"], "lr-AdamW/decay")
    assert len(ctrl) == STEPS
    vanilla = _lr_curve(runs["vanilla"], "lr-AdamW/decay")
    assert any(not math.isclose(a, b, rel_tol=1e-9) for a, b in zip(ctrl, vanilla, strict=True))  # restarts differ from cosine
    base = _lr_curve(runs["apex"], "lr-AdamW/base")
    assert base == pytest.approx(ctrl, rel=1e-9, abs=1e-15)
    for col in apex_cols:  # every APEX group follows the same curve times its own constant multiplier
        curve = _lr_curve(runs["apex"], col)
        scale = 3.0 if "mixer" in col else 1.0
        assert curve == pytest.approx([scale * x for x in ctrl], rel=1e-9, abs=1e-15), col
    assert any("mixer" in c for c in apex_cols)


def test_control_resets_adam_state_where_apex_does(runs: dict[str, list[dict[str, str]]]) -> None:
    apex, ctrl = _resets(runs["apex"]), _resets(runs["control"])
    assert sorted(apex) == sorted(ctrl) and len(ctrl) == 2
    assert all(n > 0 for n in [*apex.values(), *ctrl.values()])  # state existed and was dropped
    assert _resets(runs["vanilla"]) == {}  # one stage: no transition, nothing reset


def test_control_has_no_operators(runs: dict[str, list[dict[str, str]]]) -> None:
    def total(rows: list[dict[str, str]]) -> float:
        return next(float(r["params/total"]) for r in rows if r.get("params/total"))

    assert not any(c.startswith("lr-") and "mixer" in c for c in runs["control"][0])
    assert total(runs["control"]) == total(runs["vanilla"]) < total(runs["apex"])  # APEX adds operator params
