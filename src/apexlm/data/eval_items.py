"""Loading the prepared evaluation items (prepared on first use). Apart from `instructions`, which generates
them, so that `prepare` (which imports `instructions`) and this loader (which imports `prepare`) form no cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apexlm.data.documents import require_path
from apexlm.data.fileio import iter_jsonl
from apexlm.data.messages import check_messages
from apexlm.data.paths import instructions_file
from apexlm.data.prepare import ensure_prepared
from apexlm.errors import DataError


def load_eval_items(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Eval items from a JSONL file (default: `<data>/instructions/eval.jsonl`, prepared if missing).

    Each item has `messages`, `task`, `question`, `answer`, `metadata`; prompt with
    `prompt_messages(item)` and score a generation with `score_answer(item, text)`.
    """
    if path is None or Path(path).is_dir():
        path = instructions_file(ensure_prepared(str(path) if path else None), "eval")
    file = require_path(path, "eval items")
    items = []
    for lineno, rec in iter_jsonl(file):
        check_messages(rec, f"{file}:{lineno}")
        missing = [k for k in ("task", "question", "answer") if not isinstance(rec.get(k), str)]
        if missing:
            raise DataError(f"{file}:{lineno}: eval item lacks {', '.join(missing)}; regenerate with prepare")
        rec.setdefault("metadata", {})
        items.append(rec)
    if not items:
        raise DataError(f"{file} holds no eval items; rerun `python -m apexlm.data.prepare --force`")
    return items
