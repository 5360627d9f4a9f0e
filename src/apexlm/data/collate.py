"""Conversation examples as a dataset and their right-padding collator.

Instruction data is not packed: each conversation is one example, truncated to block_size, padded on
the right with the pad id (attention 0, label -100) up to the longest example of the batch (rounded up
to a multiple of 8 for tensor-core friendly shapes, never beyond block_size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from apexlm.data.chat import IGNORE_INDEX, ChatExample


class ChatDataset(Dataset):
    """Tokenized conversations; items are dicts of 1-D long tensors of the example's own length."""

    def __init__(self, examples: Sequence[ChatExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ex = self.examples[index]
        return {
            "input_ids": torch.tensor(ex.input_ids, dtype=torch.long),
            "labels": torch.tensor(ex.labels, dtype=torch.long),
        }

    @property
    def num_tokens(self) -> int:
        """Non-pad tokens in the dataset."""
        return sum(len(ex.input_ids) for ex in self.examples)


class PadCollator:
    """Stack examples into (B, T) `input_ids`, `attention_mask`, `labels`, padded on the right."""

    def __init__(self, pad_id: int, max_length: int, multiple_of: int = 8) -> None:
        self.pad_id = pad_id
        self.max_length = max_length
        self.multiple_of = max(1, multiple_of)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        width = min(self.max_length, -(-longest // self.multiple_of) * self.multiple_of)
        width = max(width, longest)
        batch = len(items)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((batch, width), dtype=torch.long)  # (B, T)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[row, :n] = it["input_ids"]
            labels[row, :n] = it["labels"]
            mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
