"""Conversation sources (`instructions`, `jsonl_messages`, `hf_messages`) as tokenized train/val sets.

- `instructions`: the embedded reasoning-gym mix, `<data>/instructions/{train,val}.jsonl`, prepared on
  first use (`path` may name the data dir or an instructions folder).
- `jsonl_messages`: Tulu-v2 style JSONL, a file or a folder (`train.jsonl` / `val.jsonl`, or `-*`
  shards, when present, else split by `val_fraction` on a hash of each conversation).
- `hf_messages`: a `datasets` split with a messages column.
Every record is checked (roles, content) before tokenizing; conversations whose assistant tokens are
all cut off by `block_size` are dropped, and an empty result is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from apexlm.data import hub
from apexlm.data.chat import ChatExample, encode_chat
from apexlm.data.collate import ChatDataset
from apexlm.data.messages import Conversation, messages_files, read_messages_jsonl
from apexlm.data.paths import instructions_file
from apexlm.data.spec import DataSpec
from apexlm.data.split import evenly_spaced, seeded_subset, val_names
from apexlm.errors import DataError


def _encode_all(tokenizer, convs: list[Conversation], block_size: int, where: str) -> ChatDataset:
    examples: list[ChatExample] = []
    for conv in convs:
        ex = encode_chat(tokenizer, conv, max_length=block_size)
        if ex.num_loss_tokens:
            examples.append(ex)
    if not examples:
        raise DataError(
            f"{where}: no usable conversation (none, or every assistant turn lies beyond "
            f"block_size={block_size}); add data or raise data.block_size"
        )
    return ChatDataset(examples)


def _split(
    convs: list[Conversation], val_fraction: float, salt: str
) -> tuple[list[Conversation], list[Conversation]]:
    """Split conversations by a hash of their content (duplicates land on the same side)."""
    keys = [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in convs]
    chosen = val_names(sorted(set(keys)), val_fraction, salt)
    train = [c for c, k in zip(convs, keys, strict=True) if k not in chosen]
    val = [c for c, k in zip(convs, keys, strict=True) if k in chosen]
    return train, val


def _read(files: list[Path], field: str) -> list[Conversation]:
    return [conv for f in files for conv in read_messages_jsonl(f, field)]


def _instruction_files(spec: DataSpec) -> tuple[list[Path], list[Path]]:
    from apexlm.data.prepare import ensure_prepared

    path = Path(spec.path).expanduser() if spec.path else None
    if path is not None and (path / "train.jsonl").is_file():
        return [path / "train.jsonl"], [path / "val.jsonl"]
    root = ensure_prepared(str(path) if path is not None else spec.data_dir)
    return [instructions_file(root, "train")], [instructions_file(root, "val")]


def _subset(convs: list[Conversation], cap: int | None, pick) -> list[Conversation]:
    """Cap before tokenizing: tokenizing is ~1 ms per conversation, so a 64-item debug run should not pay for
    the whole set. Same subset rule as the datamodule's caps."""
    if cap is None or cap >= len(convs):
        return convs
    return [convs[i] for i in pick(len(convs), cap)]


def conversation_sets(spec: DataSpec, tokenizer, seed: int = 0) -> tuple[ChatDataset, ChatDataset]:
    """(train, val) tokenized conversation datasets for a messages kind."""
    field = spec.messages_field
    if spec.kind == "hf_messages":
        hf_id = spec.hf_id or spec.path or ""
        train = hub.conversations(hub.load_split(hf_id, spec.hf_split, spec.hf_cache_dir), field, hf_id)
        val = (
            hub.conversations(hub.load_split(hf_id, spec.hf_val_split, spec.hf_cache_dir), field, hf_id)
            if spec.hf_val_split
            else None
        )
        where = hf_id
    else:
        train_files, val_files = (
            _instruction_files(spec) if spec.kind == "instructions" else messages_files(spec.path or "")
        )
        train = _read(train_files, field)
        val = _read([f for f in val_files if f.is_file()], field) if val_files else None
        where = str(spec.path or train_files[0].parent)
    if not train:
        raise DataError(f"{where}: no conversations found; add records with a 'messages' list")
    if not val:
        if len(train) < 2:
            raise DataError(f"{where}: one conversation cannot be split into train and val; add data")
        train, val = _split(train, spec.val_fraction, salt="messages")
    train = _subset(train, spec.max_train_samples, lambda n, k: seeded_subset(n, k, seed))
    val = _subset(val, spec.max_val_samples, evenly_spaced)
    return (
        _encode_all(tokenizer, train, spec.block_size, f"{where} (train)"),
        _encode_all(tokenizer, val, spec.block_size, f"{where} (val)"),
    )
