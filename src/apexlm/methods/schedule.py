"""Stage boundaries and the stage-aware learning-rate curve (method §6).

Every method can run in stages: APEX fuses and reselects at each boundary, HFT redraws its trainable half, and
the restart-only control of a baseline does nothing but the schedule. Keeping the boundaries and the LR curve in
one pure function of the optimizer step makes the curve identical across methods (a fair control) and makes
resume exact: nothing but the step count is needed to restore it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from apexlm.errors import ConfigError


def stage_boundaries(total_steps: int, stages: int = 1, explicit: Sequence[int] | None = None) -> list[int]:
    """Optimizer steps after which a stage ends (never the last step).

    T stages split `total_steps` into parts of ceil(total/T) steps, as the official `merge_by_steps_count`,
    whenever that yields T non-empty stages (else an even split); an explicit list overrides it.
    """
    if explicit:
        b = sorted({int(s) for s in explicit})
        if b[0] <= 0 or b[-1] >= total_steps:
            raise ConfigError(
                f"stage boundaries {list(b)} must lie strictly between 0 and trainer.max_steps={total_steps}; "
                "fix method.stage_steps"
            )
        return b
    if stages < 1:
        raise ConfigError(f"method.stages={stages} must be >= 1")
    if stages > total_steps:
        raise ConfigError(
            f"method.stages={stages} is more than the {total_steps} optimizer steps of the run; "
            "lower method.stages or raise trainer.max_steps"
        )
    length = math.ceil(total_steps / stages)
    if length * (stages - 1) < total_steps:
        return [length * i for i in range(1, stages)]
    # ceil-length stages would leave the last ones empty on short runs: split as evenly as possible instead.
    return [i * total_steps // stages for i in range(1, stages)]


def _cosine(step: int, start: int, end: int, warmup: int, peak: float) -> float:
    """Warmup 0 -> peak over `warmup` steps from `start`, then half-cosine peak -> 0 at `end`."""
    t = step - start
    if warmup > 0 and t < warmup:
        return peak * (t + 1) / warmup
    span = max(1, end - start - warmup)
    progress = min(1.0, max(0.0, (t - warmup) / span))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(
    step: int,
    total_steps: int,
    warmup_ratio: float,
    boundaries: Sequence[int] = (),
    policy: str = "continue",
    restart_warmup_ratio: float = 0.005,
    schedule: str = "cosine",
) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based).

    policy="continue": one warmup + cosine over the whole run, boundaries ignored.
    policy="restart" (official code): at each boundary b the LR it had reached, lr(b), becomes the peak of a
    fresh warmup (restart_warmup_ratio of the remaining steps) + half-cosine to 0 over the remaining steps.
    schedule="constant" keeps the post-warmup LR flat (restarts then only re-warm).
    """
    if policy not in ("continue", "restart"):
        raise ConfigError(f"stage_lr={policy!r} is unknown; use 'restart' or 'continue'")
    first_warmup = int(warmup_ratio * total_steps)

    def seg(step_: int, start: int, warm: int, peak: float) -> float:
        if schedule == "constant":
            t = step_ - start
            return peak * (t + 1) / warm if warm > 0 and t < warm else peak
        return _cosine(step_, start, total_steps, warm, peak)

    if policy == "continue" or not boundaries:
        return seg(step, 0, first_warmup, 1.0)
    start, warm, peak = 0, first_warmup, 1.0
    for b in sorted(boundaries):
        if step < b:
            break
        peak = seg(b, start, warm, peak)
        start = b
        warm = int(restart_warmup_ratio * (total_steps - b))
    return seg(step, start, warm, peak)
