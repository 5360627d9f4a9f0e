"""Figures for the analysis JSON: one function per figure, each saved as a PNG and closed.

Uses `matplotlib.figure.Figure` directly (no pyplot state), so it never switches a notebook's backend and is
safe in a training process. Every figure has a title, labelled axes and a legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

KIND_LABEL = {"attn": "attention heads (KV groups)", "ffn": "FFN channels"}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_activations(cur: Mapping[str, Any], base: Mapping[str, Any] | None, title: str, path: Path) -> Path:
    """Per-layer std of layer-normalised unit magnitudes and share of units above the layer mean."""
    fig = Figure(figsize=(10, 6.5))
    axes = fig.subplots(2, 2, squeeze=False)
    for col, kind in enumerate(("attn", "ffn")):
        if kind not in cur:
            continue
        for row, (key, ylabel) in enumerate((("std", "std of magnitude / layer mean"),
                                              ("share_above_mean", "share of units above layer mean"))):
            ax = axes[row][col]
            layers = list(range(len(cur[kind][key])))
            ax.plot(layers, cur[kind][key], marker="o", label="current model")
            if base is not None and kind in base:
                ax.plot(layers, base[kind][key], marker="s", linestyle="--", label="base model")
            ax.set_xlabel("layer")
            ax.set_ylabel(ylabel)
            ax.set_title(KIND_LABEL[kind])
            ax.set_xticks(layers)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_erank(cur: Mapping[str, Sequence[float]], base: Mapping[str, Sequence[float]] | None,
               delta: Mapping[str, Sequence[float]] | None, title: str, path: Path) -> Path:
    """Effective rank per layer for each matrix: current, base, and the update ΔW = W − W_base."""
    names = list(cur)
    fig = Figure(figsize=(3.2 * len(names), 3.6))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        layers = list(range(len(cur[name])))
        ax.plot(layers, cur[name], marker="o", label="W (current)")
        if base is not None and name in base:
            ax.plot(layers, base[name], marker="s", linestyle="--", label="W_base")
        if delta is not None and name in delta:
            ax.plot(layers, delta[name], marker="^", linestyle=":", label="ΔW = W − W_base")
        ax.set_title(f"W_{name}")
        ax.set_xlabel("layer")
        ax.set_ylabel("effective rank")
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_scores(hist: Mapping[str, Any], title: str, path: Path) -> Path:
    """Histogram of APEX unit scores (all layers pooled), one panel per unit kind."""
    kinds = [k for k in ("attn", "ffn") if k in hist]
    fig = Figure(figsize=(5 * max(1, len(kinds)), 3.6))
    axes = fig.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=False):
        edges, counts = hist[kind]["edges"], hist[kind]["counts"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=False)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="black", linewidth=0.4,
               label=f"{sum(counts)} units, {len(hist[kind]['layer_mean'])} layers")
        ax.set_xlabel("score (accumulated over the stage)")
        ax.set_ylabel("number of units")
        ax.set_title(KIND_LABEL[kind])
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_jaccard(transitions: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Mean Jaccard overlap of P and N with the previous stage, per transition (step on the x axis)."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    steps = [t["step"] for t in transitions]
    for key, style in (("p_attn", "o-"), ("n_attn", "s--"), ("p_ffn", "^-"), ("n_ffn", "v--")):
        ys = [t["overlap"][key]["mean"] for t in transitions]
        if any(y is not None for y in ys):
            ax.plot(steps, [float("nan") if y is None else y for y in ys], style,
                    label=f"{key[0].upper()} ({KIND_LABEL[key[2:]]})")
    ax.set_xlabel("optimizer step of the stage boundary")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Jaccard overlap with previous stage")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("APEX selection stability between stages")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_evolution(points: Sequence[Mapping[str, Any]], title: str, path: Path) -> Path:
    """Mean effective rank over layers against optimizer step, per matrix: W (left) and ΔW (right)."""
    fig = Figure(figsize=(11, 4))
    ax_w, ax_d = fig.subplots(1, 2)
    names = list(points[0]["erank_mean"]) if points else []
    for name in names:
        steps = [p["step"] for p in points]
        ax_w.plot(steps, [p["erank_mean"][name] for p in points], marker="o", label=f"W_{name}")
        deltas = [(p["step"], p["delta_erank_mean"].get(name)) for p in points if p.get("delta_erank_mean")]
        if deltas:
            ax_d.plot([s for s, _ in deltas], [d for _, d in deltas], marker="o", label=f"ΔW_{name}")
    for ax, what in ((ax_w, "W"), (ax_d, "ΔW = W − W_base")):
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"mean effective rank of {what}")
        ax.set_title(what)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
