"""Pre-training text as fixed blocks: tokenize documents, append eos, concatenate, cut into blocks.

Packing wastes no compute on padding: every position of a (block_size,) block is a real token and
carries loss (`labels == input_ids`; the model shifts them). Only the tail remainder shorter than one
block is dropped. The eos between documents tells the model where one ends.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from apexlm.data.documents import Document
from apexlm.data.fileio import atomic_write_bytes
from apexlm.errors import DataError

TOKEN_DTYPE = np.int32
_BATCH_DOCS = 64


def tokenize_documents(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """One (N,) int32 stream: each text's ids (no added specials) followed by eos."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no eos token, needed to separate packed documents; add one")
    parts: list[np.ndarray] = []
    for i in range(0, len(texts), _BATCH_DOCS):
        batch = list(texts[i : i + _BATCH_DOCS])
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray([*ids, eos], dtype=TOKEN_DTYPE))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=TOKEN_DTYPE)


def stream_key(fingerprint: str, docs: Sequence[Document]) -> str:
    """Cache key of a token stream: tokenizer fingerprint plus every document's source and text."""
    digest = hashlib.sha256(fingerprint.encode())
    for d in docs:
        digest.update(hashlib.sha256(d.source.encode("utf-8")).digest())
        digest.update(hashlib.sha256(d.text.encode("utf-8")).digest())
    return digest.hexdigest()[:32]


def cached_stream(
    tokenizer, docs: Sequence[Document], cache_dir: Path | None, fingerprint: str
) -> np.ndarray:
    """`tokenize_documents` through an on-disk cache `<cache_dir>/<key>.npy` (skipped when None)."""
    path = cache_dir / f"{stream_key(fingerprint, docs)}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass
    stream = tokenize_documents(tokenizer, [d.text for d in docs])
    if path is not None:
        save_stream(path, stream)
    return stream


def save_stream(path: Path, stream: np.ndarray) -> None:
    """Write a stream as .npy atomically; a read-only cache folder is not an error."""
    buf = io.BytesIO()
    np.save(buf, stream)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass


def pack(stream: np.ndarray, block_size: int) -> np.ndarray:
    """(num_blocks, block_size) view of the stream; the last partial block is dropped."""
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)


class BlockDataset(Dataset):
    """Packed blocks as training examples: input_ids = labels, attention_mask all ones."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = blocks  # (N, T) int32

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.blocks[index].astype(np.int64))  # (T,)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    @property
    def num_tokens(self) -> int:
        """Tokens in the dataset (all real: packing has no padding)."""
        return int(self.blocks.size)
