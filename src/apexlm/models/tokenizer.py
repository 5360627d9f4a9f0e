"""The tokenizer a run's model speaks: its own (pretrained dir / hub id / GGUF) or the embedded BPE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from apexlm.errors import ConfigError


def load_run_tokenizer(cfg: DictConfig) -> Any:
    """The model's own tokenizer (pretrained dir / hub id / GGUF) or the embedded one for a fresh tiny model."""
    from apexlm.data.tokenizer import load_tokenizer

    m = cfg.model
    if m.get("kind") == "gguf":
        from apexlm.models.gguf import load_gguf_tokenizer

        return load_gguf_tokenizer(m)
    ref = m.get("tokenizer") or m.get("pretrained")
    if ref is None:
        if m.get("kind") == "tiny":  # a fresh tiny model speaks the embedded BPE, whatever the data
            from apexlm.data.prepare import ensure_prepared

            ref = str(ensure_prepared(cfg.paths.data_dir) / "tokenizer")
        else:
            raise ConfigError("no tokenizer: set model.tokenizer=<dir or hub id> or model.pretrained")
    if cfg.data.get("kind") in ("pretrain_text", "instructions"):
        from apexlm.data.prepare import ensure_prepared

        ensure_prepared(cfg.paths.data_dir)
    if m.get("pretrained") and not m.get("tokenizer") and not Path(str(ref)).exists() and \
            str(ref).startswith(("/", ".", "~")):
        from apexlm.errors import ModelError

        raise ModelError(f"model.pretrained={ref} does not exist; give an existing local model dir or a hub id")
    return load_tokenizer(str(ref))
