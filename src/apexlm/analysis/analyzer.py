"""`Analyzer`: run the §8 analyses on a model against its base and write `<run>/analysis/` (JSON + PNG).

Files:
  base.json                         base model: activation distribution stats, effective ranks
  <tag>.json, *_<tag>.png           one snapshot (a stage boundary `stage<k>_step<s>`, or `final`)
  erank_evolution.png, jaccard.png  across snapshots (rewritten after each snapshot)
The base's weights are kept in ORIGINAL unit order; APEX runs pass `unit_ids` (current position → original
unit id) so that ΔW = W − W_base compares the same units. Without that map a permuted model gets no ΔW.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apexlm.analysis import plots
from apexlm.analysis.activations import activation_magnitudes, distribution_stats
from apexlm.analysis.erank import delta_erank, erank_per_layer
from apexlm.analysis.model_view import geometry, layer_weights, to_layout, to_original
from apexlm.analysis.selection import score_histograms
from apexlm.eval.wandb_log import log_to_wandb
from apexlm.utils.summary import write_json

log = logging.getLogger("apexlm")
UnitIds = dict[str, list[torch.Tensor]]


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _means(table: Mapping[str, Sequence[float]] | None) -> dict[str, float] | None:
    return None if table is None else {k: _mean(v) for k, v in table.items()}


class Analyzer:
    """Analyses of one run. `batches`: the fixed val batches (dicts with input_ids, attention_mask)."""

    def __init__(self, out_dir: Path, batches: Sequence[Mapping[str, torch.Tensor]]) -> None:
        self.out_dir = Path(out_dir)
        self.batches = list(batches)
        self.base_acts: dict[str, Any] | None = None
        self.base_erank: dict[str, list[float]] | None = None
        self.base_weights: dict[str, list[torch.Tensor]] | None = None    # original unit order, CPU

    # ---- base --------------------------------------------------------------------------------------
    def set_base(self, model: nn.Module, unit_ids: UnitIds | None = None, note: str | None = None) -> None:
        """Measure the base model (or a function-equivalent, possibly permuted copy with its `unit_ids`)."""
        weights = layer_weights(model)
        self.base_erank = erank_per_layer(weights)
        self.base_weights = to_original(weights, unit_ids, geometry(model)) if unit_ids else weights
        acts = activation_magnitudes(model, self.batches) if self.batches else None
        self.base_acts = distribution_stats(acts) if acts is not None else None
        write_json(self.out_dir / "base.json", {"activations": self.base_acts, "erank": self.base_erank,
                                                "erank_mean": _means(self.base_erank), "note": note})

    def load_base(self) -> None:
        """Reuse the base statistics of an existing `base.json` (no weights: ΔW is then not computed)."""
        rec = json.loads((self.out_dir / "base.json").read_text())
        self.base_acts, self.base_erank = rec.get("activations"), rec.get("erank")

    # ---- one snapshot ------------------------------------------------------------------------------
    def snapshot(self, model: nn.Module, tag: str, step: int | None, *, stage: int | None = None,
                 tokens_seen: int | None = None, unit_ids: UnitIds | None = None,
                 delta_note: str | None = None, scores: dict[str, list[torch.Tensor]] | None = None,
                 overlap: dict[str, Any] | None = None) -> dict[str, float]:
        """Analyse `model` now; write `<tag>.json` and its PNGs (logged to W&B as images and a table when a
        run is active); return the scalar summaries (no prefix) for the caller to log."""
        geo = geometry(model)
        acts = distribution_stats(activation_magnitudes(model, self.batches)) if self.batches else None
        weights = layer_weights(model)
        erank = erank_per_layer(weights)
        delta = None
        if self.base_weights is None:
            delta_note = delta_note or "no base weights: ΔW not computed"
        elif delta_note is None:
            base = to_layout(self.base_weights, unit_ids, geo) if unit_ids else self.base_weights
            delta = delta_erank(weights, base)
        record = {"tag": tag, "step": step, "stage": stage, "tokens_seen": tokens_seen,
                  "geometry": vars(geo) | {"rep": geo.rep}, "activations": acts, "erank": erank,
                  "erank_mean": _means(erank), "delta_erank": delta, "delta_erank_mean": _means(delta),
                  "delta_note": delta_note, "scores": score_histograms(scores) if scores else None,
                  "overlap": overlap}
        write_json(self.out_dir / f"{tag}.json", record)
        images = self._figures(record, tag)
        scalars = snapshot_scalars(record)
        log_to_wandb(None, {f"eval/analysis/{name}": path for name, path in images.items()},
                     {"eval/analysis/erank_table": self._erank_table(record)})
        return scalars

    def _figures(self, rec: Mapping[str, Any], tag: str) -> dict[str, Path]:
        where = f" — {tag}" + (f" (step {rec['step']})" if rec["step"] is not None else "")
        out: dict[str, Path] = {}
        if rec["activations"] is not None:
            out["activations"] = plots.plot_activations(
                rec["activations"], self.base_acts, f"Activation-magnitude spread per layer{where}",
                self.out_dir / f"activations_{tag}.png")
        out["erank"] = plots.plot_erank(rec["erank"], self.base_erank, rec["delta_erank"],
                                        f"Effective rank per layer{where}", self.out_dir / f"erank_{tag}.png")
        if rec["scores"]:
            out["scores"] = plots.plot_scores(rec["scores"], f"APEX unit scores{where}",
                                              self.out_dir / f"scores_{tag}.png")
        points, transitions = evolution_points(self.out_dir), stage_transitions(self.out_dir)
        if len(points) > 1:
            out["erank_evolution"] = plots.plot_evolution(points, "Effective rank during training",
                                                          self.out_dir / "erank_evolution.png")
        if transitions:
            out["jaccard"] = plots.plot_jaccard(transitions, self.out_dir / "jaccard.png")
        return out

    @staticmethod
    def _erank_table(rec: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
        names = list(rec["erank"])
        rows = []
        for i in range(len(rec["erank"][names[0]])):
            for name in names:
                d = rec["delta_erank"][name][i] if rec["delta_erank"] else None
                rows.append([rec["tag"], rec["step"], i, name, rec["erank"][name][i], d])
        return ["tag", "step", "layer", "matrix", "erank", "delta_erank"], rows



def snapshot_scalars(rec: Mapping[str, Any]) -> dict[str, float]:
    """Means over layers: act_std/<kind>, act_share_above_mean/<kind>, erank/<m>, delta_erank/<m>."""
    out: dict[str, float] = {}
    for kind, stats in (rec.get("activations") or {}).items():
        out[f"act_std/{kind}"] = stats["std_mean"]
        out[f"act_share_above_mean/{kind}"] = stats["share_above_mean_mean"]
    out.update({f"erank/{k}": v for k, v in (rec.get("erank_mean") or {}).items()})
    out.update({f"delta_erank/{k}": v for k, v in (rec.get("delta_erank_mean") or {}).items()})
    return out


def load_snapshots(analysis_dir: Path) -> list[dict[str, Any]]:
    """Every snapshot record in an `analysis/` folder, ordered by step (unknown step = after the others)."""
    snaps = []
    for path in Path(analysis_dir).glob("*.json"):
        if path.name == "base.json":
            continue
        rec = json.loads(path.read_text())
        if isinstance(rec, dict) and "erank_mean" in rec:
            snaps.append(rec)
    last = max((s["step"] for s in snaps if s.get("step") is not None), default=0) + 1
    for s in snaps:
        s["step"] = s["step"] if s.get("step") is not None else last
    return sorted(snaps, key=lambda r: (r["step"], r["tag"] == "final"))


def evolution_points(analysis_dir: Path) -> list[dict[str, Any]]:
    """[{tag, step, erank_mean, delta_erank_mean}]: the base (step 0) first, then every snapshot by step."""
    points: list[dict[str, Any]] = []
    base = Path(analysis_dir) / "base.json"
    if base.is_file():
        b = json.loads(base.read_text())
        points.append({"tag": "base", "step": 0, "erank_mean": b["erank_mean"], "delta_erank_mean": None})
    points += [{k: s.get(k) for k in ("tag", "step", "erank_mean", "delta_erank_mean")}
               for s in load_snapshots(analysis_dir)]
    return points


def stage_transitions(analysis_dir: Path) -> list[dict[str, Any]]:
    """[{step, overlap}] of the snapshots taken at APEX stage boundaries (P/N Jaccard with the stage before)."""
    snaps = load_snapshots(analysis_dir)
    return [{"step": s["step"], "overlap": s["overlap"]} for s in snaps if s.get("overlap")]
