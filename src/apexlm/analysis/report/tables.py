"""Markdown of the sweep report: the per-variant table, the deltas against each control, tokens-to-target.

Kept apart from the numbers (`stats`) so that the same numbers can go to JSON, and the layout can change
without touching the statistics. Every delta is printed with the seed spread beside it (docs/results.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from apexlm.analysis.report.collect import Failure, Run
from apexlm.analysis.report.stats import Delta, Reach, mean_std, metric

SUMMARY_METRICS = (("final_val_loss", "final val loss"), ("final_val_ppl", "final val ppl"))


def fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """A number for a table: 4 significant digits, '—' when missing or NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) < 1e-12:  # float noise of an exact zero (e.g. the std of equal per-seed deltas)
        value = 0.0
    text = f"{value:+.{digits}g}" if sign else f"{value:.{digits}g}"
    return text


def fmt_ms(mean: float, std: float, digits: int = 4) -> str:
    """'mean ± std', or just the mean when the std is undefined (one run)."""
    if not math.isfinite(mean):
        return "—"
    return fmt(mean, digits) if not math.isfinite(std) else f"{fmt(mean, digits)} ± {fmt(std, 2)}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (pipes inside cells escaped)."""
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _seeds(runs: Sequence[Run]) -> str:
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    return ",".join(str(s) for s in seeds) or "—"


def variants_table(groups: Mapping[str, Sequence[Run]], order: Sequence[str], evals: Sequence[str],
                   failed: Mapping[str, int] | None = None) -> list[str]:
    """One row per variant: n runs, seeds, failed jobs, mean ± std of final loss/ppl and eval metrics, budget, cost."""
    failed = failed or {}
    header = ["variant", "n", "seeds", "failed", *(label for _, label in SUMMARY_METRICS), *evals,
              "trainable fraction", "tokens", "train time (s)"]
    rows = []
    for name in order:
        runs = groups[name]
        cells = [name, str(len(runs)), _seeds(runs), str(failed.get(name, 0))]
        for key in [*(k for k, _ in SUMMARY_METRICS), *evals]:
            m, s, _ = mean_std(metric(r, key) for r in runs)
            cells.append(fmt_ms(m, s))
        for key, digits in (("trainable_fraction", 4), ("tokens", 6), ("train_time_s", 4)):
            values = [r.tokens for r in runs] if key == "tokens" else [metric(r, key) for r in runs]
            m, s, _ = mean_std(values)
            cells.append(fmt_ms(m, s, digits))
        rows.append(cells)
    return table(header, rows)


def per_task_table(groups: Mapping[str, Sequence[Run]], order: Sequence[str], keys: Sequence[str]) -> list[str]:
    """One row per variant, one column per task (`eval/<metric>/<task>` keys): mean ± std over seeds."""
    header = ["variant", *(k.rsplit("/", 1)[1] for k in keys)]
    rows = [[name, *(fmt_ms(*mean_std(metric(r, k) for r in groups[name])[:2], 3) for k in keys)]
            for name in order]
    return table(header, rows)


def _delta_cells(d: Delta) -> list[str]:
    pooled = f"{fmt(d.delta, sign=True)} (seed std {fmt(d.pooled_std, 3)})"
    if d.pairs:
        paired = f"{fmt(d.paired, sign=True)} ± {fmt(d.paired_std, 3)} (n={len(d.pairs)})"
        if math.isfinite(d.ci95):
            paired += f"; 95 % CI [{fmt(d.paired - d.ci95, 3, sign=True)}, {fmt(d.paired + d.ci95, 3, sign=True)}]"
        per_seed = ", ".join(f"s{s}: {fmt(v, 3, sign=True)}" for s, v in d.pairs.items())
    else:
        paired, per_seed = "no shared seeds", "—"
    return [pooled, paired, per_seed]


def deltas_table(label: str, control: str, rows_in: Mapping[str, Delta]) -> list[str]:
    """Variant minus `control` for one metric: unpaired delta with pooled seed std, paired-by-seed delta."""
    header = ["variant", f"Δ {label} vs {control} (pooled seed std)", "paired Δ ± std (pairs; 95 % t-interval)",
              "per seed"]
    return table(header, [[name, *_delta_cells(d)] for name, d in rows_in.items()])


def reach_table(baseline: str, rows_in: Mapping[str, Reach]) -> list[str]:
    """Tokens each variant needed to reach the baseline's mean final ppl, as a fraction of the baseline's tokens."""
    first = next(iter(rows_in.values()), None)
    target = fmt(first.target) if first else "—"
    header = ["variant", "reached", f"tokens to ppl ≤ {target}", f"ratio of {baseline}'s tokens",
              "ratio, step tokens only", "per run"]
    rows = []
    for name, r in rows_in.items():
        n, k = len(r.per_run), len(r.reached)
        m, s, _ = mean_std(r.reached)
        per_run = ", ".join("not reached" if v is None else fmt(v, 3) for v in r.ratios.values())
        rows.append([name, f"{k}/{n}", fmt_ms(m, s, 6) if k else "not reached",
                     fmt(r.ratio, 3) if k else "not reached", fmt(r.step_ratio, 3) if k else "not reached",
                     per_run])
    return table(header, rows)


def failures_table(failures: Sequence[Failure]) -> list[str]:
    """Jobs that wrote failed.json: where, which variant and seed, and the one-line error."""
    rows = [[f.variant, str(f.seed) if f.seed is not None else "—", f.kind, f.error.splitlines()[0][:200]
             if f.error else "", str(f.path)] for f in failures]
    return table(["variant", "seed", "error kind", "error", "run dir"], rows)
