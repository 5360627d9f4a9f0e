"""Plain-text documents: the record type and readers for user text corpora (`text_files`).

A user points `path` at a file or a folder; every `.txt`, `.md`, `.rst`, `.py` file becomes one
document and every line of a `.jsonl` file with a text field becomes one. Files are read as strict
UTF-8 so that a mis-encoded corpus stops the run with the file name instead of training on mojibake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apexlm.data.fileio import iter_jsonl, read_text_utf8
from apexlm.data.split import val_names
from apexlm.errors import DataError

TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".rst", ".py")
JSONL_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Document:
    """One document: `source` names it (file or file:line), `text` is its content."""

    source: str
    text: str


def require_path(path: str | Path, what: str) -> Path:
    """`path` as a Path; a missing one raises a `DataError` that says what was expected there."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} not found: {p} does not exist; fix data.path or create it")
    return p


def list_text_files(root: Path) -> list[Path]:
    """Text and JSONL files under `root` (recursively, hidden entries skipped), in sorted order."""
    if root.is_file():
        return [root]
    suffixes = (*TEXT_SUFFIXES, JSONL_SUFFIX)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in suffixes
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_jsonl_documents(path: Path, text_field: str = "text", label: str | None = None) -> list[Document]:
    """One document per JSONL line; each line must hold a string under `text_field`."""
    docs = []
    for lineno, rec in iter_jsonl(path):
        text = rec.get(text_field)
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{lineno}: no string field '{text_field}'; "
                f"add it or set data.text_field to the field that holds the text"
            )
        source = rec.get("source") if isinstance(rec.get("source"), str) else f"{label or path.name}:{lineno}"
        if text:
            docs.append(Document(source, text))
    return docs


def read_text_documents(path: str | Path, text_field: str = "text") -> list[Document]:
    """All documents under `path` (file or folder); raises `DataError` when there are none."""
    root = require_path(path, "text data")
    files = list_text_files(root)
    if not files:
        raise DataError(
            f"no {'/'.join(TEXT_SUFFIXES + (JSONL_SUFFIX,))} files under {root}; "
            "point data.path at a folder of text files"
        )
    docs: list[Document] = []
    for f in files:
        label = f.name if root.is_file() else f.relative_to(root).as_posix()
        if f.suffix == JSONL_SUFFIX:
            docs.extend(read_jsonl_documents(f, text_field, label))
        else:
            text = read_text_utf8(f)
            if text.strip():
                docs.append(Document(label, text))
    if not docs:
        raise DataError(f"no text in {root}: every file is empty; add text or fix data.path")
    return docs


def split_documents(
    docs: Sequence[Document], val_fraction: float, salt: str
) -> tuple[list[Document], list[Document]]:
    """(train, val) by a hash of each document's source; see `apexlm.data.split.val_names`."""
    chosen = val_names([d.source for d in docs], val_fraction, salt)
    return [d for d in docs if d.source not in chosen], [d for d in docs if d.source in chosen]
