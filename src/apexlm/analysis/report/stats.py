"""Numbers of the sweep report: per-variant means and seed spreads, deltas against controls, tokens-to-target.

Why these: at the sizes this project runs, APEX-minus-baseline differences are often smaller than the
seed-to-seed spread (docs/results.md), so every delta is printed beside the pooled seed std of the two arms,
and beside the paired-by-seed delta (same seed = same data order and init, which removes part of the noise).
Std is the sample std (ddof = 1); with one run it is NaN and printed as such.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from apexlm.analysis.report.collect import Run

NAN = float("nan")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values; NaN for what is undefined (no values, or std of one)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return NAN, NAN, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else NAN), len(xs)


# Two-sided 95 % quantiles of Student's t, df = 1..30 (beyond: 1.96 + 2.4/df, within 0.002 of the exact value).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (NaN for df < 1)."""
    if df < 1:
        return NAN
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def t_interval(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t-interval, n) of the finite values: mean ± t(n-1)·s/√n; NaN when n < 2.

    Used on paired per-seed differences: the interval excludes 0 when the effect is resolved at 95 %.
    """
    m, s, n = mean_std(values)
    return m, (t975(n - 1) * s / math.sqrt(n) if n > 1 else NAN), n


def pooled_std(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """sqrt(((n_a-1)s_a² + (n_b-1)s_b²) / (n_a+n_b-2)): the seed spread of two arms together.

    An arm with a single run adds no spread information (its std is NaN) and is left out; NaN if neither has any.
    """
    num = den = 0.0
    for s, n in ((std_a, n_a), (std_b, n_b)):
        if n > 1 and math.isfinite(s):
            num += (n - 1) * s * s
            den += n - 1
    return math.sqrt(num / den) if den > 0 else NAN


def metric(run: Run, key: str) -> float | None:
    """A summary value as float (None when absent or not a number)."""
    value = run.summary.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def by_seed(runs: Sequence[Run], key: str) -> dict[int, float]:
    """Seed -> mean of `key` over that seed's runs (several runs of one seed are averaged)."""
    groups: dict[int, list[float]] = {}
    for run in runs:
        value = metric(run, key)
        if run.seed is not None and value is not None and math.isfinite(value):
            groups.setdefault(run.seed, []).append(value)
    return {seed: statistics.fmean(vals) for seed, vals in sorted(groups.items())}


@dataclass
class Delta:
    """Variant minus control for one metric."""

    delta: float          # mean(variant) - mean(control)
    pooled_std: float     # seed spread of both arms together
    paired: float         # mean over shared seeds of (variant - control) at the same seed
    paired_std: float     # sample std of those per-seed differences
    pairs: dict[int, float]  # seed -> per-seed difference
    n_variant: int
    n_control: int

    @property
    def ci95(self) -> float:
        """Half-width of the 95 % t-interval of the paired delta (over the shared seeds); NaN below 2 pairs."""
        return t_interval(self.pairs.values())[1]


def delta(variant: Sequence[Run], control: Sequence[Run], key: str) -> Delta:
    """Unpaired delta of means with the pooled seed std, plus the paired-by-seed delta where seeds match."""
    mv, sv, nv = mean_std(metric(r, key) for r in variant)
    mc, sc, nc = mean_std(metric(r, key) for r in control)
    sv_seed, sc_seed = by_seed(variant, key), by_seed(control, key)
    pairs = {s: sv_seed[s] - sc_seed[s] for s in sv_seed if s in sc_seed}
    pm, ps, _ = mean_std(pairs.values())
    return Delta(delta=mv - mc, pooled_std=pooled_std(sv, nv, sc, nc), paired=pm, paired_std=ps, pairs=pairs,
                 n_variant=nv, n_control=nc)


def tokens_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Tokens at which a validation curve first gets to ppl <= target, linearly interpolated; None if never.

    Between the last point above the target and the first at or below it, tokens are interpolated linearly in
    ppl. The first point already at or below the target returns its own token count (nothing earlier to
    interpolate from).
    """
    prev: tuple[float, float] | None = None
    for tokens, ppl in curve:
        if ppl <= target:
            if prev is None or prev[1] == ppl:
                return float(tokens)
            t0, p0 = prev
            return t0 + (p0 - target) / (p0 - ppl) * (tokens - t0)
        prev = (tokens, ppl)
    return None


@dataclass
class Reach:
    """How many tokens a variant's runs needed to reach the control's mean final ppl."""

    target: float                    # the control's mean final val ppl
    control_tokens: float            # the control's mean tokens read
    per_run: dict[str, float | None]  # run dir -> tokens needed (None: not reached)
    offsets: dict[str, float] = field(default_factory=dict)  # run dir -> assessment-pass tokens within them

    @property
    def step_ratio(self) -> float:
        """`ratio` counting only optimizer-step tokens (the assessment pass left out): the paper's reading."""
        steps = [t - self.offsets.get(k, 0.0) for k, t in self.per_run.items() if t is not None]
        if not steps or not self.control_tokens:
            return NAN
        return statistics.fmean(steps) / self.control_tokens

    @property
    def reached(self) -> list[float]:
        return [t for t in self.per_run.values() if t is not None]

    @property
    def ratio(self) -> float:
        """Mean tokens needed over the runs that reached the target, as a fraction of the control's tokens."""
        if not self.reached or not self.control_tokens:
            return NAN
        return statistics.fmean(self.reached) / self.control_tokens

    @property
    def ratios(self) -> dict[str, float | None]:
        return {k: (None if t is None or not self.control_tokens else t / self.control_tokens)
                for k, t in self.per_run.items()}


def reach(variant: Sequence[Run], control: Sequence[Run]) -> Reach:
    """Tokens each run of `variant` needed to reach the control's mean final validation perplexity."""
    target = mean_std(metric(r, "final_val_ppl") for r in control)[0]
    control_tokens = mean_std(r.tokens for r in control)[0]
    per_run = {str(r.path): (tokens_to_reach(r.curve, target) if math.isfinite(target) else None)
               for r in variant}
    return Reach(target=target, control_tokens=control_tokens, per_run=per_run,
                 offsets={str(r.path): r.token_offset for r in variant})


def group(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Variant name -> its runs (sorted by seed)."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(run.variant, []).append(run)
    return {k: sorted(v, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))) for k, v in out.items()}


def eval_keys(runs: Iterable[Run]) -> list[str]:
    """Every numeric `eval/*` key found in any summary, sorted."""
    keys = {k for r in runs for k, v in r.summary.items()
            if k.startswith("eval/") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(keys)


def headline_eval_keys(keys: Iterable[str]) -> list[str]:
    """The eval metrics a comparison is read on: macro exact match, MC accuracy, perplexity per split.
    Per-task scores, item/token counts, losses and timings stay in report.json (per task: its own table)."""
    return [k for k in keys if re.fullmatch(r"eval/(exact_match|mc_accuracy|ppl/[^/]+)", k)]


def per_task_keys(keys: Iterable[str], name: str = "exact_match") -> list[str]:
    """`eval/<name>/<task>` keys, i.e. the per-task breakdown of a macro metric."""
    return [k for k in keys if k.startswith(f"eval/{name}/")]


def natural_key(text: str) -> list[object]:
    """Sort key that orders 'x3' before 'x10' (digit runs compare as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def order_variants(names: Iterable[str], controls: Sequence[str], key: Callable[[str], object] = natural_key
                   ) -> list[str]:
    """Controls first, in the order given, then the rest in natural order."""
    names = list(names)
    return [c for c in controls if c in names] + sorted((n for n in names if n not in controls), key=key)
