"""Config checks that must hold before any data is read or any step is taken (one-line errors)."""

from __future__ import annotations

from omegaconf import DictConfig

from apexlm.errors import ConfigError

METHODS = ("full", "apex", "s2", "lora", "dora", "pissa", "hft", "gmt")


def _ratio(m: DictConfig, key: str, lo: float, hi: float, lo_open: bool = True) -> None:
    v = m.get(key)
    if v is None:
        return
    ok = (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        raise ConfigError(f"method.{key}={v} is out of range; it must be in {'(' if lo_open else '['}{lo}, {hi}]")


def validate_config(cfg: DictConfig) -> None:
    m = cfg.method
    if m.get("name") not in METHODS:
        raise ConfigError(f"method.name={m.get('name')!r} is unknown; choose one of {', '.join(METHODS)}")
    if float(cfg.optim.lr) <= 0:
        raise ConfigError(f"optim.lr={cfg.optim.lr} must be > 0")
    if int(m.get("stages", 1) or 1) < 1:
        raise ConfigError(f"method.stages={m.get('stages')} must be >= 1")
    if m.get("stage_lr", "continue") not in ("restart", "continue"):
        raise ConfigError(f"method.stage_lr={m.get('stage_lr')!r} is unknown; use restart or continue")
    if m.name in ("apex", "s2"):
        _ratio(m, "k_ratio", 0.0, 0.5)
        for key in ("tuned_attn_ratio", "tuned_ffn_ratio"):
            _ratio(m, key, 0.0, 1.0)
            if m.get(key) is not None and m[key] < 2 * m.k_ratio:
                raise ConfigError(
                    f"method.{key}={m[key]} must cover P and N (>= 2*k_ratio = {2 * m.k_ratio}); raise it or lower k_ratio")
        if float(m.get("mixer_lr_scale", 1.0)) <= 0:
            raise ConfigError(f"method.mixer_lr_scale={m.mixer_lr_scale} must be > 0")
        for key, allowed in (("scoring", ("rank", "avg", "ma", "ma_rank")),
                             ("selection", ("activation", "random", "reversed")),
                             ("operator", ("monarch", "dense", "diagonal", "none")),
                             ("init", ("random", "noise", "zeros"))):
            if m.get(key) is not None and m[key] not in allowed:
                raise ConfigError(f"method.{key}={m[key]!r} is unknown; choose one of {', '.join(allowed)}")
    bs = int(cfg.data.get("block_size", 0) or 0)
    max_pos = cfg.model.get("max_position_embeddings")
    if max_pos and bs > int(max_pos):
        raise ConfigError(f"data.block_size={bs} exceeds model.max_position_embeddings={max_pos}; lower it")
