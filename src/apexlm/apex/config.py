"""APEX hyper-parameters (`ApexConfig`) and their validation.

Names follow docs/method.md: `k_ratio` is the fraction of a layer's units in P and in N each (§1–§2; the
official `v_ratio`/`u_ratio` are 2·k_ratio), `tuned_*_ratio` the fraction in N∪P∪E (§2), `operator` the
mixer of §3.1 (or an ablation), `finetune_qk` the q/k s2 deltas of §3.6, `train_embeddings` and
`base_trainable` the trainable sets of method §5 (instruction tuning and continued pre-training).
A bad value raises `ConfigError` with one line that says what is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from apexlm.errors import ConfigError

SCORINGS = ("rank", "avg", "ma", "ma_rank")
SELECTIONS = ("activation", "random", "reversed")
OPERATORS = ("monarch", "dense", "diagonal", "none")
INITS = ("random", "noise", "zeros")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ConfigError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"apex {name}={value!r} is unknown: use one of {', '.join(allowed)}")


def _ratio(name: str, value: float | None, high: float, optional: bool = False) -> None:
    """Raise ConfigError unless 0 < value <= high (or value is None when optional)."""
    if value is None and optional:
        return
    if value is None or not (0.0 < float(value) <= high):
        raise ConfigError(f"apex {name}={value!r} is out of range: use a number in (0, {high}]")


@dataclass
class ApexConfig:
    """What to select, how to expand and what to train (method §1–§5).

    k_ratio: P and N each hold max(1, floor(n*k_ratio)) units per layer (paper: IT 0.1875, CPT 0.125).
    tuned_attn_ratio / tuned_ffn_ratio: N∪P∪E holds floor(n*ratio) units; None means E is empty.
    scoring: per-forward score update (§1). selection: activation | random | reversed (§1 ablations).
    operator: monarch (§3.1) | dense | diagonal | none (s2 deltas only, the "S2" baseline).
    mix_channels: True mixes P into N (§3.3); False mixes P into itself (ablation).
    init / init_scale: mixer initialisation (§3.1); every init keeps the operator at the identity
        except `noise`, which starts near it.
    finetune_qk: s2 deltas on the tuned q/k rows (§3.6). train_embeddings: embeddings and lm_head train.
    base_trainable: every base weight trains and no s2 delta is created (continued pre-training).
    seed: tie-breaks, random selection, low-budget layers and operator init.
    low_budget_undrawn_s2: in the low-budget head mode (§2), layers that are not drawn still get
        floor(G*tuned_attn_ratio) E-only s2 heads (this project's earlier behaviour). Default False = the
        official code: undrawn layers train no attention parameter (docs/method.md, differences).
    reverse_heads: selection=reversed also swaps P and N for heads (this project's earlier behaviour).
        Default False = the official `reverse_topk_mink`: channels only, heads keep the activation choice.
    """

    k_ratio: float = 0.1875
    tuned_attn_ratio: float | None = 0.5625
    tuned_ffn_ratio: float | None = 0.465
    scoring: str = "rank"
    selection: str = "activation"
    operator: str = "monarch"
    mix_channels: bool = True
    init: str = "random"
    init_scale: float = 1.0
    finetune_qk: bool = True
    train_embeddings: bool = True
    base_trainable: bool = False
    seed: int = 0
    low_budget_undrawn_s2: bool = False
    reverse_heads: bool = False

    def __post_init__(self) -> None:
        _ratio("k_ratio", self.k_ratio, 0.5)
        _ratio("tuned_attn_ratio", self.tuned_attn_ratio, 1.0, optional=True)
        _ratio("tuned_ffn_ratio", self.tuned_ffn_ratio, 1.0, optional=True)
        _choice("scoring", self.scoring, SCORINGS)
        _choice("selection", self.selection, SELECTIONS)
        _choice("operator", self.operator, OPERATORS)
        _choice("init", self.init, INITS)
        if not float(self.init_scale) > 0.0:
            raise ConfigError(f"apex init_scale={self.init_scale!r} must be > 0: use e.g. 1.0")
        for name in ("low_budget_undrawn_s2", "reverse_heads"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"apex {name}={getattr(self, name)!r} must be true or false")
        if self.reverse_heads and self.selection != "reversed":
            raise ConfigError(f"apex reverse_heads=true only acts with selection=reversed (got "
                              f"selection={self.selection!r}): set method.selection=reversed or drop reverse_heads")

    @property
    def use_s2(self) -> bool:
        """Whether tuned units get s2 deltas: not when the base itself trains (it would double its LR)."""
        return not self.base_trainable

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for logs and `Apex.state_dict`."""
        return asdict(self)
