"""The Lightning datamodule the trainer uses, built from `cfg.data` in one call.

`build_datamodule(cfg, tokenizer, seed)` loads, checks, tokenizes and batches everything *at build
time*, so every data problem surfaces as a one-line `DataError` before training starts. Batches are
dicts of (B, T) long tensors `input_ids`, `attention_mask`, `labels` (-100 where there is no loss):
packed blocks for text kinds, right-padded conversations with assistant-only labels for chat kinds.
Training order is shuffled by a generator seeded with `seed`; val order is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from apexlm.data.chat_data import conversation_sets
from apexlm.data.collate import PadCollator
from apexlm.data.packing import BlockDataset
from apexlm.data.spec import DataSpec, parse_spec
from apexlm.data.split import evenly_spaced, seeded_subset
from apexlm.data.text_data import build_val_loaders, text_blocks, text_val_loader
from apexlm.errors import DataError

__all__ = ["LMDataModule", "build_datamodule", "build_val_loaders", "text_val_loader"]


class LMDataModule(L.LightningDataModule):
    """Train/val datasets ready to batch; `num_train_tokens`, `train_size` and `token_count` for logging."""

    def __init__(
        self,
        spec: DataSpec,
        train: Dataset,
        val: Dataset,
        seed: int,
        collate_fn: Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]] | None,
        num_train_tokens: int,
        pad_token_id: int,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.train_set = train
        self.val_set = val
        self.seed = seed
        self.collate_fn = collate_fn
        self.num_train_tokens = num_train_tokens
        self.pad_token_id = pad_token_id
        self.train_size = len(train)  # type: ignore[arg-type]
        self.val_size = len(val)  # type: ignore[arg-type]

    def train_dataloader(self) -> DataLoader:
        """Shuffled by a generator seeded with `seed`; incomplete last batch dropped (fixed shapes)."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.spec.batch_size,
            shuffle=True,
            drop_last=True,
            generator=generator,
            collate_fn=self.collate_fn,
            num_workers=self.spec.num_workers,
            persistent_workers=self.spec.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """In order, every example, `eval_batch_size` at a time."""
        return DataLoader(
            self.val_set,
            batch_size=self.spec.eval_batch_size,
            shuffle=False,
            collate_fn=self.collate_fn,
            num_workers=self.spec.num_workers,
            persistent_workers=self.spec.num_workers > 0,
        )

    @staticmethod
    def token_count(batch: Mapping[str, torch.Tensor]) -> int:
        """Non-pad tokens in a batch (what throughput and tokens_seen count)."""
        return int(batch["attention_mask"].sum().item())

    def describe(self) -> str:
        """One line for the run log."""
        return (
            f"data {self.spec.kind}: {self.train_size} train / {self.val_size} val examples, "
            f"{self.num_train_tokens} train tokens, block_size {self.spec.block_size}"
        )


def _cap(dataset: Dataset, cap: int | None, pick: Callable[[int, int], list[int]]) -> Dataset:
    n = len(dataset)  # type: ignore[arg-type]
    return dataset if cap is None or cap >= n else Subset(dataset, pick(n, cap))


def _check_sizes(spec: DataSpec, n_train: int, n_val: int, unit: str) -> None:
    if n_train == 0:
        raise DataError(
            f"no training {unit}s: the train data has fewer than block_size={spec.block_size} "
            "tokens; add data or lower data.block_size"
        )
    if n_train < spec.batch_size:
        raise DataError(
            f"train set has {n_train} {unit}(s), fewer than batch_size={spec.batch_size}; lower "
            "data.batch_size or data.block_size, or add data"
        )
    if n_val == 0:
        raise DataError(
            f"no validation {unit}s: the val split has fewer than block_size={spec.block_size} "
            "tokens; raise data.val_fraction or lower data.block_size"
        )


def _tokens(dataset: Dataset) -> int:
    if isinstance(dataset, Subset):
        base = dataset.dataset
        if isinstance(base, BlockDataset):
            return len(dataset.indices) * base.blocks.shape[1]
        return sum(len(base.examples[i].input_ids) for i in dataset.indices)  # type: ignore[attr-defined]
    return dataset.num_tokens  # type: ignore[attr-defined]


def build_datamodule(cfg: Mapping[str, Any], tokenizer, seed: int) -> LMDataModule:
    """Load, check and tokenize the data described by `cfg` (see `apexlm.data.spec.DataSpec`).

    Raises `DataError` for any data problem (missing path, malformed JSONL, bad roles, non-UTF-8
    text, empty data, block_size < 8, fewer examples than one batch) before any training happens.
    """
    spec = parse_spec(cfg)
    if tokenizer.pad_token_id is None:
        raise DataError("the tokenizer has no pad token; load it with apexlm.data.tokenizer.load_tokenizer")
    if spec.packed:
        train_blocks, val_blocks = text_blocks(spec, tokenizer)
        train: Dataset = BlockDataset(np.ascontiguousarray(train_blocks))
        val: Dataset = BlockDataset(np.ascontiguousarray(val_blocks))
        collate, unit = None, "block"
    else:
        train, val = conversation_sets(spec, tokenizer, seed)
        collate = PadCollator(tokenizer.pad_token_id, spec.block_size, spec.pad_to_multiple_of)
        unit = "conversation"
    train = _cap(train, spec.max_train_samples, lambda n, k: seeded_subset(n, k, seed))
    val = _cap(val, spec.max_val_samples, evenly_spaced)
    _check_sizes(spec, len(train), len(val), unit)  # type: ignore[arg-type]
    return LMDataModule(spec, train, val, seed, collate, _tokens(train), tokenizer.pad_token_id)
