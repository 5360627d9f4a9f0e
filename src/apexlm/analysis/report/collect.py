"""Find the runs below a directory and name each one's variant, for the sweep report (`sweep`).

A run is a directory holding `summary.json` (finished) or `failed.json` (a multirun job that failed; the sweep
went on, see `apexlm.training.entry`). Its variant is what the run changed: the experiment it composed plus
its command-line overrides other than the seed. The experiment is read from Hydra's record of the choice
(`.hydra/hydra.yaml`, runtime.choices.experiment) rather than from `experiment_name`, because a study
(`hparams_search=...`) renames every job to the study so that W&B groups them together.
Overrides that every run shares (the same debug or model sizes for all arms) do not tell variants apart and
are dropped from the names; so are overrides that only say where or how to log.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NON_VARIANT_KEYS = ("seed", "experiment", "hparams_search")
NON_VARIANT_PREFIXES = ("hydra.", "hydra/", "paths.", "logger")
ARM_PREFIX = "hparams_search/"


@dataclass
class Run:
    """One finished run: its summary, its validation curve and what distinguishes it from other runs."""

    path: Path
    experiment: str
    seed: int | None
    overrides: list[str]
    summary: dict[str, Any]
    curve: list[tuple[float, float]] = field(default_factory=list)  # (tokens read, val ppl), by tokens
    variant: str = ""

    @property
    def token_offset(self) -> float:
        """Training tokens read outside the optimizer steps (APEX's stage-1 assessment pass, pitfall 9)."""
        return float(self.summary.get("assess_tokens") or 0)

    @property
    def tokens(self) -> float:
        """All training tokens the run read: optimizer steps plus the assessment pass."""
        return float(self.summary.get("tokens_seen") or 0) + self.token_offset


@dataclass
class Failure:
    """A multirun job that wrote failed.json instead of summary.json."""

    path: Path
    experiment: str
    seed: int | None
    overrides: list[str]
    kind: str
    error: str
    variant: str = ""


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    with path.open() as f:
        return yaml.safe_load(f)


def _hydra_record(run_dir: Path) -> tuple[str | None, int | None, list[str]]:
    """(experiment choice or experiment_name, seed, overrides) from the run's `.hydra/` files, if any."""
    hydra_dir = run_dir / ".hydra"
    overrides = [str(o) for o in (_load_yaml(hydra_dir / "overrides.yaml") or [])]
    cfg = _load_yaml(hydra_dir / "config.yaml") or {}
    hydra_cfg = (_load_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {})
    choice = ((hydra_cfg.get("runtime") or {}).get("choices") or {}).get("experiment")
    experiment = choice or cfg.get("experiment_name")
    seed = cfg.get("seed")
    return (str(experiment) if experiment else None), (int(seed) if seed is not None else None), overrides


def split_override(override: str) -> tuple[str, str]:
    """'+a/b=v' -> ('a/b', 'v'): the key without Hydra's +, ++ or ~ prefix, and the value."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def is_variant_override(override: str) -> bool:
    """Whether an override can change the trained model (seed and logging/where-to-write ones cannot)."""
    key, _ = split_override(override)
    return key not in NON_VARIANT_KEYS and not key.startswith(NON_VARIANT_PREFIXES)


def read_curve(run_dir: Path, token_offset: float = 0.0) -> list[tuple[float, float]]:
    """(tokens, val ppl) points from `csv/metrics.csv` (columns `val/tokens_seen`, `val/ppl`), sorted by tokens.

    A point logged twice at the same token count (the last in-fit validation and the final one) is kept once.
    """
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    points: dict[float, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            tok, ppl = row.get("val/tokens_seen") or "", row.get("val/ppl") or ""
            if tok.strip() and ppl.strip():
                value = float(ppl)
                if math.isfinite(value):
                    points[float(tok) + token_offset] = value
    return sorted(points.items())


def _seed_of(summary_seed: Any, hydra_seed: int | None) -> int | None:
    if summary_seed is not None:
        return int(summary_seed)
    return hydra_seed


def collect(root: Path) -> tuple[list[Run], list[Failure]]:
    """Every run and failed job below `root` (including `root` itself), with variant names assigned."""
    runs: list[Run] = []
    failures: list[Failure] = []
    for path in sorted(root.rglob("summary.json")):
        run_dir = path.parent
        summary = json.loads(path.read_text())
        experiment, seed, overrides = _hydra_record(run_dir)
        run = Run(path=run_dir, experiment=experiment or str(summary.get("experiment", "run")),
                  seed=_seed_of(summary.get("seed"), seed), overrides=overrides, summary=summary)
        run.curve = read_curve(run_dir, run.token_offset)
        runs.append(run)
    for path in sorted(root.rglob("failed.json")):
        run_dir = path.parent
        if (run_dir / "summary.json").exists():
            continue  # a rerun in the same dir finished; the summary wins
        info = json.loads(path.read_text())
        experiment, seed, overrides = _hydra_record(run_dir)
        failures.append(Failure(path=run_dir, experiment=experiment or "unknown", seed=seed, overrides=overrides,
                                kind=str(info.get("kind", "")), error=str(info.get("error", ""))))
    name_variants(runs, failures)
    return runs, failures


def _label(experiment: str, overrides: list[str], common: set[str]) -> str:
    parts: list[str] = []
    for override in sorted(o for o in overrides if is_variant_override(o) and o not in common):
        key, value = split_override(override)
        if key.startswith(ARM_PREFIX):  # a study's arm group: name the arm, unless it just picks the experiment
            if value != experiment:
                parts.append(f"{key[len(ARM_PREFIX):]}={value}")
        else:
            parts.append(f"{key}={value}")
    return " ".join([experiment, *parts])


def name_variants(runs: list[Run], failures: list[Failure]) -> None:
    """Set `.variant` on every run and failure: experiment + the overrides that are not shared by all."""
    every = [set(filter(is_variant_override, r.overrides)) for r in [*runs, *failures]]
    common = set.intersection(*every) if len(every) > 1 else set()
    for item in [*runs, *failures]:
        item.variant = _label(item.experiment, item.overrides, common)
