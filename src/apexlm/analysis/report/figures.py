"""Figures of the sweep report: final perplexity per variant, and validation perplexity against tokens read.

Uses `matplotlib.figure.Figure` directly (no pyplot state), so it works headless and never changes a notebook's
backend. Every figure has a title, labelled axes and a legend. The token axis counts every training token a run
read, including APEX's stage-1 assessment pass (pitfall 9), so curves compare data cost fairly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from apexlm.analysis.report.collect import Run
from apexlm.analysis.report.stats import mean_std, metric


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def final_ppl_figure(groups: Mapping[str, Sequence[Run]], order: Sequence[str], controls: Sequence[str],
                     path: Path, title: str = "") -> Path:
    """Mean ± std of the final validation perplexity per variant, each seed as a dot, controls as lines."""
    fig = Figure(figsize=(max(6.0, 0.55 * len(order) + 3), 4.8))
    ax = fig.add_subplot(1, 1, 1)
    colors = _colors(len(order))
    for i, name in enumerate(order):
        values = [v for v in (metric(r, "final_val_ppl") for r in groups[name]) if v is not None]
        m, s, _ = mean_std(values)
        ax.errorbar([i], [m], yerr=[s if math.isfinite(s) else 0.0], fmt="o", color=colors[i], capsize=4,
                    markersize=7, label="mean ± std over seeds" if i == 0 else None)
        ax.scatter([i] * len(values), values, color=colors[i], marker="x", s=18, alpha=0.7,
                   label="one seed" if i == 0 else None)
    for j, control in enumerate(c for c in controls if c in groups):
        m = mean_std(metric(r, "final_val_ppl") for r in groups[control])[0]
        if math.isfinite(m):
            ax.axhline(m, linestyle=("--", ":", "-.")[j % 3], color="grey", linewidth=1,
                       label=f"{control} mean")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("variant")
    ax.set_ylabel("final validation perplexity")
    ax.set_title(title or "Final validation perplexity per variant")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves_figure(groups: Mapping[str, Sequence[Run]], order: Sequence[str], path: Path,
                  target: float | None = None, target_label: str = "", title: str = "") -> Path:
    """Validation perplexity against tokens read, one line per run, one colour per variant."""
    fig = Figure(figsize=(8.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    colors = _colors(len(order))
    ppl_min, ppl_max = math.inf, 0.0
    for i, name in enumerate(order):
        labelled = False
        for run in groups[name]:
            if not run.curve:
                continue
            xs, ys = zip(*run.curve, strict=True)
            ppl_min, ppl_max = min(ppl_min, *ys), max(ppl_max, *ys)
            ax.plot(xs, ys, color=colors[i], marker=".", linewidth=1.2, alpha=0.85,
                    label=None if labelled else name)
            labelled = True
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=target_label or "target")
    if ppl_max > 0 and ppl_min > 0 and ppl_max / ppl_min > 5:
        ax.set_yscale("log")
    ax.set_xlabel("training tokens read (incl. APEX assessment pass)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(title or "Validation perplexity vs tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(order) > 8 else 1)
    return _save(fig, path)
