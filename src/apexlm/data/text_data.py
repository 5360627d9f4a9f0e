"""Pre-training text sources (`pretrain_text`, `text_files`, `hf_text`) as packed train/val blocks.

- `pretrain_text`: an embedded domain ("shakespeare" or "pycode") from `<data>/text/<domain>/`,
  prepared on first use.
- `text_files`: a user file or folder (.txt/.md/.rst/.py, or .jsonl with a text field); files named
  `val`/`valid`/`validation`/`dev` (optionally `-suffix`) form the val split when present, else
  documents are split by `val_fraction` (a single document is split at the block level: its last
  blocks are val).
- `hf_text`: a `datasets` split (`hf_val_split`, else split by `val_fraction`).
Token streams are cached under `<data>/cache/tokens/` keyed by tokenizer and text.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from apexlm.data import hub
from apexlm.data.documents import (
    Document,
    list_text_files,
    read_jsonl_documents,
    read_text_documents,
    require_path,
    split_documents,
)
from apexlm.data.packing import BlockDataset, cached_stream, pack
from apexlm.data.paths import DOMAINS, resolve_data_dir, text_file, token_cache_dir
from apexlm.data.spec import DataSpec
from apexlm.data.split import evenly_spaced, is_val_name
from apexlm.data.tokenizer import tokenizer_fingerprint
from apexlm.errors import DataError


def embedded_documents(domain: str, split: str, data_dir: str | Path | None = None) -> list[Document]:
    """Documents of an embedded domain's split, running `prepare` first if needed."""
    from apexlm.data.prepare import ensure_prepared

    if domain not in DOMAINS:
        raise DataError(f"unknown text domain {domain!r}; use one of {', '.join(DOMAINS)} or a path")
    root = ensure_prepared(data_dir)
    return read_jsonl_documents(text_file(root, domain, split))


def _blocks(tokenizer, docs: list[Document], block_size: int, data_dir: str | None) -> np.ndarray:
    cache = token_cache_dir(resolve_data_dir(data_dir))
    return pack(cached_stream(tokenizer, docs, cache, tokenizer_fingerprint(tokenizer)), block_size)


def _split_blocks(blocks: np.ndarray, val_fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Last ceil(val_fraction * n) blocks as val (for a corpus that is a single document)."""
    n = len(blocks)
    if n < 2:
        raise DataError(
            f"{where} gives {n} block(s); need at least 2 to split train/val: add text or lower "
            "data.block_size"
        )
    n_val = min(n - 1, max(1, math.ceil(val_fraction * n)))
    return blocks[: n - n_val], blocks[n - n_val :]


def _from_docs(
    spec: DataSpec, tokenizer, train: list[Document], val: list[Document] | None, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pack train/val documents; without a val list, split documents (or blocks) by val_fraction."""
    if val is None:
        if len(train) >= 2:
            train, val = split_documents(train, spec.val_fraction, salt="text")
        else:
            all_blocks = _blocks(tokenizer, train, spec.block_size, spec.data_dir)
            return _split_blocks(all_blocks, spec.val_fraction, where)
    return (
        _blocks(tokenizer, train, spec.block_size, spec.data_dir),
        _blocks(tokenizer, val, spec.block_size, spec.data_dir),
    )


def _text_files(spec: DataSpec, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    root = require_path(spec.path or "", "text data")
    files = list_text_files(root)
    val_files = [f for f in files if is_val_name(f.stem)] if root.is_dir() else []
    if val_files and len(val_files) < len(files):
        train_docs = [d for f in files if f not in val_files for d in read_text_documents(f, spec.text_field)]
        val_docs = [d for f in val_files for d in read_text_documents(f, spec.text_field)]
        return _from_docs(spec, tokenizer, train_docs, val_docs, str(root))
    return _from_docs(spec, tokenizer, read_text_documents(root, spec.text_field), None, str(root))


def _hf_text(spec: DataSpec, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    hf_id = spec.hf_id or spec.path or ""
    train = hub.text_documents(
        hub.load_split(hf_id, spec.hf_split, spec.hf_cache_dir), spec.text_field, hf_id
    )
    val = None
    if spec.hf_val_split:
        ds = hub.load_split(hf_id, spec.hf_val_split, spec.hf_cache_dir)
        val = hub.text_documents(ds, spec.text_field, hf_id)
    return _from_docs(spec, tokenizer, train, val, hf_id)


def embedded_domain(spec: DataSpec) -> tuple[str, str | None]:
    """(domain, data dir) of a `pretrain_text` spec: `path` may be a domain name or the data dir."""
    domain, data_dir = spec.domain, spec.data_dir
    if spec.path in DOMAINS and domain is None:
        domain = spec.path
    elif spec.path is not None and spec.path not in DOMAINS:
        data_dir = spec.path
    if domain is None:
        raise DataError(f"data.kind=pretrain_text needs data.domain (one of {', '.join(DOMAINS)}); set it")
    return domain, data_dir


def text_blocks(spec: DataSpec, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) packed blocks, each (N, block_size) int32, for a text kind."""
    if spec.kind == "pretrain_text":
        domain, data_dir = embedded_domain(spec)
        train = embedded_documents(domain, "train", data_dir)
        val = embedded_documents(domain, "val", data_dir)
        return _from_docs(replace(spec, data_dir=data_dir), tokenizer, train, val, domain)
    if spec.kind == "text_files":
        return _text_files(spec, tokenizer)
    return _hf_text(spec, tokenizer)


def text_val_loader(
    domain_or_path: str,
    tokenizer,
    block_size: int,
    batch_size: int,
    data_dir: str | None = None,
    max_samples: int | None = None,
) -> DataLoader:
    """Val blocks of an embedded domain (its val split) or of every document under a path, in order.

    Used to measure perplexity on both the source and the target domain with one tokenizer.
    """
    if block_size < 8:
        raise DataError(f"block_size={block_size} is too small; use at least 8")
    if domain_or_path in DOMAINS:
        docs = embedded_documents(domain_or_path, "val", data_dir)
    else:
        docs = read_text_documents(domain_or_path)
    cache = token_cache_dir(resolve_data_dir(data_dir))
    blocks = pack(cached_stream(tokenizer, docs, cache, tokenizer_fingerprint(tokenizer)), block_size)
    if max_samples is not None:
        blocks = blocks[evenly_spaced(len(blocks), max_samples)]
    if len(blocks) == 0:
        raise DataError(
            f"{domain_or_path}: fewer than block_size={block_size} tokens of text; "
            "lower block_size or add text"
        )
    return DataLoader(BlockDataset(blocks), batch_size=batch_size, shuffle=False)


def build_val_loaders(
    tokenizer,
    block_size: int,
    batch_size: int,
    domains: tuple[str, ...] = DOMAINS,
    data_dir: str | None = None,
    max_samples: int | None = None,
) -> dict[str, DataLoader]:
    """{domain_or_path: val loader} for each entry (default: both embedded domains)."""
    return {d: text_val_loader(d, tokenizer, block_size, batch_size, data_dir, max_samples) for d in domains}
