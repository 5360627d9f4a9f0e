"""Conversation records (Tulu-v2 style `{"messages": [{"role", "content"}, ...]}`): checks and readers.

Each record is checked before any training: it must hold a non-empty `messages` list of
{role, content} objects with roles system/user/assistant and at least one assistant turn (otherwise there
is nothing to learn). Errors name the file and 1-based line so the user can fix the exact record.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apexlm.data.documents import require_path
from apexlm.data.fileio import iter_jsonl
from apexlm.data.split import is_train_name, is_val_name
from apexlm.errors import DataError

ROLES: tuple[str, ...] = ("system", "user", "assistant")
Conversation = list[dict[str, str]]


def check_messages(record: Mapping[str, Any], where: str, field: str = "messages") -> Conversation:
    """The record's conversation as [{role, content}], or a `DataError` that says what is wrong at `where`."""
    msgs = record.get(field)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(
            f"{where}: record has no '{field}' list; each record needs "
            f'{{"{field}": [{{"role": "user", "content": ...}}, ...]}}'
        )
    out: Conversation = []
    for j, m in enumerate(msgs, start=1):
        if not isinstance(m, Mapping):
            raise DataError(
                f"{where}: message {j} is not an object with 'role' and 'content'; fix the record"
            )
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(
                f"{where}: message {j} has role {role!r}; roles must be one of {', '.join(ROLES)}; rename it"
            )
        if not isinstance(content, str):
            raise DataError(f"{where}: message {j} has no string 'content'; fix the record")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(
            f"{where}: record has no assistant message, so there is nothing to learn; "
            "add one or drop the record"
        )
    return out


def read_messages_jsonl(path: Path, field: str = "messages") -> list[Conversation]:
    """All conversations of one JSONL file (each line checked, errors name file:line)."""
    return [check_messages(rec, f"{path}:{lineno}", field) for lineno, rec in iter_jsonl(path)]


def messages_files(path: str | Path) -> tuple[list[Path], list[Path]]:
    """(train files, val files) for a file or folder.

    In a folder, `train.jsonl` / `val.jsonl` (or `train-*`, `val-*` shards) when present, else all its
    `*.jsonl` as train (val then comes from `val_fraction`).
    """
    root = require_path(path, "messages data")
    if root.is_file():
        return [root], []
    files = sorted(p for p in root.glob("*.jsonl") if p.is_file())
    if not files:
        raise DataError(f"no .jsonl files in {root}; point data.path at a messages JSONL file or folder")
    train = [p for p in files if is_train_name(p.stem)]
    val = [p for p in files if is_val_name(p.stem)]
    return (train, val) if train else ([p for p in files if p not in val], val)
