"""The data config (`cfg.data`) as a checked, typed record.

Hydra hands the datamodule an OmegaConf mapping; reading it once into `DataSpec` turns typos and
impossible values into a one-line `DataError` before anything is tokenized or trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apexlm.errors import DataError

KINDS: tuple[str, ...] = (
    "pretrain_text",
    "text_files",
    "hf_text",
    "instructions",
    "jsonl_messages",
    "hf_messages",
)
TEXT_KINDS: frozenset[str] = frozenset({"pretrain_text", "text_files", "hf_text"})
MIN_BLOCK_SIZE = 8


@dataclass(frozen=True)
class DataSpec:
    """What to load and how to batch it; see the module docstring of `apexlm.data.datamodule`."""

    kind: str
    block_size: int
    batch_size: int
    eval_batch_size: int
    path: str | None = None
    domain: str | None = None
    data_dir: str | None = None
    num_workers: int = 0
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    val_fraction: float = 0.05
    hf_id: str | None = None
    hf_split: str = "train"
    hf_val_split: str | None = None
    hf_cache_dir: str | None = None
    text_field: str = "text"
    messages_field: str = "messages"
    pad_to_multiple_of: int = 8

    @property
    def packed(self) -> bool:
        """True for pre-training text (packed blocks), False for conversations (padded)."""
        return self.kind in TEXT_KINDS


def _int(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"data.{key} must be an integer, got {value!r}; fix the data config")
    if value < minimum:
        raise DataError(f"data.{key}={value} is below {minimum}; set data.{key} >= {minimum}")
    return value


def _str(cfg: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = cfg.get(key, default)
    return None if value is None or value == "" else str(value)


def parse_spec(cfg: Mapping[str, Any]) -> DataSpec:
    """Read and check a data config mapping (unknown keys are ignored)."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise DataError(f"data.kind={kind!r} is not one of {', '.join(KINDS)}; fix the data config")
    block_size = cfg.get("block_size")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < MIN_BLOCK_SIZE:
        raise DataError(f"data.block_size={block_size!r} is too small; set an integer >= {MIN_BLOCK_SIZE}")
    batch_size = _int(cfg, "batch_size", None, 1)
    if batch_size is None:
        raise DataError("data.batch_size is missing; set it to a positive integer")
    val_fraction = cfg.get("val_fraction", 0.05)
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"data.val_fraction={val_fraction!r} must be strictly between 0 and 1")
    spec = DataSpec(
        kind=kind,
        block_size=block_size,
        batch_size=batch_size,
        eval_batch_size=_int(cfg, "eval_batch_size", batch_size, 1) or batch_size,
        path=_str(cfg, "path"),
        domain=_str(cfg, "domain"),
        data_dir=_str(cfg, "data_dir"),
        num_workers=_int(cfg, "num_workers", 0, 0) or 0,
        max_train_samples=_int(cfg, "max_train_samples", None, 1),
        max_val_samples=_int(cfg, "max_val_samples", None, 1),
        val_fraction=float(val_fraction),
        hf_id=_str(cfg, "hf_id"),
        hf_split=_str(cfg, "hf_split", "train") or "train",
        hf_val_split=_str(cfg, "hf_val_split"),
        hf_cache_dir=_str(cfg, "hf_cache_dir"),
        text_field=_str(cfg, "text_field", "text") or "text",
        messages_field=_str(cfg, "messages_field", "messages") or "messages",
        pad_to_multiple_of=_int(cfg, "pad_to_multiple_of", 8, 1) or 8,
    )
    if spec.kind in ("text_files", "jsonl_messages") and spec.path is None:
        raise DataError(f"data.kind={spec.kind} needs data.path (a file or folder); set it")
    if spec.kind in ("hf_text", "hf_messages") and spec.hf_id is None and spec.path is None:
        raise DataError(f"data.kind={spec.kind} needs data.hf_id (hub id or local path); set it")
    return spec
