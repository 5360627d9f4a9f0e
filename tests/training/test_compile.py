"""`trainer.compile`: over 10 steps and 2 APEX stages the model is compiled once, never re-compiled.

A counting backend (graphs are run as traced, so the test stays fast on a CPU) records every compile with
dynamo's compile id (frame, attempt): attempt > 0 is a re-compile of a frame whose guards failed — what the
scoring recorder's Python forward counter used to cause on every step (and, after 8, a fall-back to eager).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.runs import MICRO, run_in_process

COMPILES: list[tuple[int, int]] = []


def _counting(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    from torch._guards import CompileContext

    cid = CompileContext.current_compile_id()
    COMPILES.append((cid.frame_id, cid.frame_compile_id) if cid is not None else (-1, -1))
    return gm.forward


@pytest.mark.slow  # two 10-step runs traced by dynamo
@pytest.mark.parametrize("experiment", ["apex_it", "apex_cpt"])
def test_compiled_apex_run_compiles_once_per_stage_at_most(tmp_path: Path, experiment: str) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    if "apexlm_count" not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(name="apexlm_count")(_counting)
    COMPILES.clear()
    over = [f"experiment={experiment}", "debug=fdr", *MICRO, "threads=1", "trainer.max_steps=10",
            "method.stages=2", "trainer.val_check_interval=1000", "trainer.limit_val_batches=0",
            "trainer.compile=apexlm_count", f"paths.log_dir={tmp_path}/logs", "logger=csv", "export=false"]
    summary = run_in_process(over, tmp_path / "run")
    assert summary["optimizer_steps"] == 10
    assert COMPILES, "nothing was compiled"
    per_frame: dict[int, int] = {}
    for frame, _ in COMPILES:
        per_frame[frame] = per_frame.get(frame, 0) + 1
    assert len(per_frame) == 1, COMPILES                     # one graph: no break in the hooks or operators
    assert max(per_frame.values()) <= 2, COMPILES            # at most once per stage (2 stages)
    if experiment == "apex_cpt":                             # packed blocks, one shape: compiled exactly once
        assert max(per_frame.values()) == 1, COMPILES        # (IT batches vary in length: one dynamic-shape
                                                             # re-compile is allowed there)


def test_unknown_backend_is_a_config_error() -> None:
    from apexlm.errors import ConfigError
    from apexlm.training.compile import compile_backend

    with pytest.raises(ConfigError, match="trainer.compile"):
        compile_backend("no_such_backend")
