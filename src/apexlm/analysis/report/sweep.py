"""Sweep report: one markdown file + figures for every run below a directory (a multirun dir, or any dir).

    python -m apexlm.analysis.report.sweep logs/methods_cpt/multiruns/<time> \
        [--out DIR] [--baseline full_cpt] [--controls full_cpt,full_restart_cpt]

Writes `report.md`, `report.json`, `final_ppl.png` and `val_ppl_vs_tokens.png` into --out (default: the dir)
and prints the markdown. Why it looks the way it does: a claim like "APEX beats full fine-tuning" is only worth
something against the control that has the same schedule (restart-only) and next to the seed spread, so every
variant is compared with each control, unpaired (pooled seed std beside it) and paired by seed; the data-cost
claim ("vanilla's perplexity with a third of the data") is the tokens each run needed to reach the plain
control's final perplexity. Variant names come from `collect` (experiment + overrides except the seed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apexlm.analysis.report import figures, tables
from apexlm.analysis.report.collect import Failure, Run, collect
from apexlm.analysis.report.stats import (
    Delta,
    Reach,
    delta,
    eval_keys,
    group,
    headline_eval_keys,
    mean_std,
    metric,
    order_variants,
    per_task_keys,
    reach,
)

DEFAULT_CONTROLS = ("full_it", "full_restart_it", "full_cpt", "full_restart_cpt")
DELTA_METRICS = (("final_val_ppl", "final val ppl"), ("final_val_loss", "final val loss"))


def split_names(text: str | None) -> list[str]:
    """'a,b x=[1,2]' -> ['a', 'b x=[1,2]']: commas split names except inside brackets or braces."""
    if not text:
        return []
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [n for n in out if n]


def canonical(name: str) -> str:
    """A variant name as `collect` writes it: the experiment, then its overrides sorted.

    So `--controls "full_restart_it method.stages=2 method.stage_lr=restart"` matches in any override order.
    """
    head, *rest = name.split()
    return " ".join([head, *sorted(rest)])


def choose_controls(variants: Sequence[str], controls: Sequence[str], baseline: str | None
                    ) -> tuple[list[str], str | None, list[str]]:
    """(controls present, baseline, notes). Defaults: the full_* controls present; baseline = first plain one."""
    notes: list[str] = []
    baseline = canonical(baseline) if baseline else None
    wanted = [canonical(c) for c in controls] or [c for c in DEFAULT_CONTROLS if c in variants]
    if baseline and baseline not in wanted:
        wanted.insert(0, baseline)
    present = [c for c in wanted if c in variants]
    for c in wanted:
        if c not in variants:
            notes.append(f"control `{c}` has no finished run here; variants are: {', '.join(variants)}")
    if baseline is None:
        plain = [c for c in present if "restart" not in c]
        baseline = (plain or present or [None])[0]
    elif baseline not in variants:
        baseline = None
    return present, baseline, notes


@dataclass
class Report:
    """Everything the report computed, for callers (tests, notebooks) that want numbers instead of markdown."""

    runs: list[Run]
    failures: list[Failure]
    order: list[str]
    controls: list[str]
    baseline: str | None
    deltas: dict[str, dict[str, dict[str, Delta]]]  # metric -> control -> variant -> Delta
    reach: dict[str, Reach]                         # variant -> tokens to the baseline's final ppl
    markdown: str
    files: list[Path]


def _deltas(groups: dict[str, list[Run]], order: list[str], controls: list[str], metrics: Sequence[str]
            ) -> dict[str, dict[str, dict[str, Delta]]]:
    return {key: {c: {v: delta(groups[v], groups[c], key) for v in order if v != c} for c in controls}
            for key in metrics}


def _header(root: Path, runs: list[Run], failures: list[Failure], order: list[str], controls: list[str],
            baseline: str | None, notes: list[str]) -> list[str]:
    lines = [f"# Sweep report: `{root}`", "",
             f"{len(runs)} finished run(s) in {len(order)} variant(s); {len(failures)} failed job(s). "
             f"Plain control (baseline): `{baseline or 'none'}`; controls: "
             f"{', '.join(f'`{c}`' for c in controls) or 'none'}.", "",
             "Mean ± sample std over seeds. Δ = variant mean − control mean, with the pooled seed std of both "
             "arms beside it; paired Δ = mean over the seeds both ran of (variant − control) at the same seed. "
             "Tokens count every training token read, including APEX's assessment pass.", ""]
    lines += [f"> note: {n}" for n in notes]
    return lines + ([""] if notes else [])


def build_report(root: Path, out: Path | None = None, baseline: str | None = None,
                 controls: Sequence[str] = ()) -> Report:
    """Collect the runs below `root`, compute the tables, write report.md/report.json/PNGs into `out`."""
    out = out or root
    runs, failures = collect(root)
    if not runs and not failures:
        raise FileNotFoundError(f"no summary.json or failed.json below {root}; point it at a run or multirun dir")
    groups = group(runs)
    controls_present, baseline, notes = choose_controls(sorted(groups), controls, baseline)
    order = order_variants(groups, controls_present)
    all_evals = eval_keys(runs)
    evals = headline_eval_keys(all_evals)
    metrics = [k for k, _ in DELTA_METRICS] + evals
    deltas = _deltas(groups, order, controls_present, metrics)
    reaches = {v: reach(groups[v], groups[baseline]) for v in order} if baseline else {}

    md = _header(root, runs, failures, order, controls_present, baseline, notes)
    failed = {f.variant: sum(g.variant == f.variant for g in failures) for f in failures}
    md += ["## Variants", "", *tables.variants_table(groups, order, evals, failed), ""]
    tasks = per_task_keys(all_evals)
    if tasks:
        md += ["## Exact match per task", "", *tables.per_task_table(groups, order, tasks), ""]
    labels = dict(DELTA_METRICS) | {k: k for k in evals}
    if controls_present:
        md += ["## Deltas against the controls", ""]
        for key in metrics:
            for control in controls_present:
                md += [f"### {labels[key]}: variant − `{control}`", "",
                       *tables.deltas_table(labels[key], control, deltas[key][control]), ""]
    if baseline:
        target = next(iter(reaches.values())).target
        md += [f"## Tokens to reach `{baseline}`'s final perplexity ({tables.fmt(target)})", "",
               "First validation point at or below the target, linearly interpolated between validation points; "
               f"ratio = tokens needed / `{baseline}`'s mean tokens "
               f"({tables.fmt(next(iter(reaches.values())).control_tokens, 6)}); the step-tokens ratio leaves "
               "APEX's stage-1 assessment pass out of the count.", "",
               *tables.reach_table(baseline, reaches), ""]
    if failures:
        md += ["## Failed jobs", "", *tables.failures_table(failures), ""]
    out.mkdir(parents=True, exist_ok=True)
    files = [figures.final_ppl_figure(groups, order, controls_present, out / "final_ppl.png",
                                      title=f"Final validation perplexity per variant ({_root_label(root)})")]
    if any(r.curve for r in runs):
        target = reaches[baseline].target if baseline else None
        files.append(figures.curves_figure(groups, order, out / "val_ppl_vs_tokens.png", target=target,
                                           target_label=f"{baseline} mean final ppl",
                                           title=f"Validation perplexity vs tokens ({_root_label(root)})"))
    md += ["## Figures", "", *(f"![{p.stem}]({p.name})" for p in files), ""]
    markdown = "\n".join(md)
    (out / "report.md").write_text(markdown)
    report = Report(runs, failures, order, controls_present, baseline, deltas, reaches, markdown, files)
    (out / "report.json").write_text(json.dumps(to_json(report, groups), indent=1, default=_json_default))
    return report


def _root_label(root: Path) -> str:
    """'<study> <time>' for a multirun dir (logs/<study>/multiruns/<time>), else the dir's name."""
    root = root.resolve()
    return f"{root.parent.parent.name} {root.name}" if root.parent.name == "multiruns" else root.name


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def _clean(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def to_json(report: Report, groups: dict[str, list[Run]]) -> dict[str, Any]:
    """The report's numbers as plain JSON (NaN written as null)."""
    variants = {}
    for name in report.order:
        runs = groups[name]
        keys = ["final_val_loss", "final_val_ppl", "trainable_fraction", "train_time_s", *eval_keys(runs)]
        stats = {k: dict(zip(("mean", "std", "n"), mean_std(metric(r, k) for r in runs), strict=True)) for k in keys}
        stats["tokens"] = dict(zip(("mean", "std", "n"), mean_std(r.tokens for r in runs), strict=True))
        variants[name] = {"runs": [str(r.path) for r in runs], "seeds": [r.seed for r in runs],
                          "stats": {k: {kk: _clean(vv) for kk, vv in v.items()} for k, v in stats.items()}}
    deltas = {key: {c: {v: {"delta": _clean(d.delta), "pooled_std": _clean(d.pooled_std),
                            "paired": _clean(d.paired), "paired_std": _clean(d.paired_std),
                            "paired_ci95": _clean(d.ci95),
                            "pairs": {str(s): x for s, x in d.pairs.items()}} for v, d in rows.items()}
                    for c, rows in per.items()} for key, per in report.deltas.items()}
    reach_json = {v: {"target": _clean(r.target), "control_tokens": _clean(r.control_tokens),
                      "ratio": _clean(r.ratio), "step_ratio": _clean(r.step_ratio), "per_run": r.per_run} for v, r in report.reach.items()}
    return {"baseline": report.baseline, "controls": report.controls, "variants": variants, "deltas": deltas,
            "reach": reach_json, "failures": [{"run_dir": str(f.path), "variant": f.variant, "seed": f.seed,
                                               "kind": f.kind, "error": f.error} for f in report.failures]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apexlm.analysis.report.sweep",
                                     description="Markdown + PNG report of every run below a directory.")
    parser.add_argument("root", type=Path, help="a multirun dir, a run dir, or any dir above them (e.g. logs/)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the PNGs go (default: root)")
    parser.add_argument("--baseline", default=None,
                        help="the plain control: target of the tokens-to-reach table (default: first plain "
                             "full_* control present)")
    parser.add_argument("--controls", default=None,
                        help="comma-separated variant names to subtract from every variant (default: the "
                             "full_it/full_restart_it/full_cpt/full_restart_cpt present)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory; pass a run or multirun dir", file=sys.stderr)
        return 2
    try:
        report = build_report(args.root, args.out, args.baseline, split_names(args.controls))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.markdown)
    print(f"report: {(args.out or args.root) / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
