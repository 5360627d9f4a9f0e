"""Loading through 🤗 `datasets` (`hf_text`, `hf_messages`): the code path users run with hub ids.

`data.hf_id` is what `datasets.load_dataset` accepts: a hub id, or a local folder of data files. A
single local file (.json/.jsonl/.csv/.parquet/.txt) goes through the matching packaged builder. The
import is lazy so that the rest of the data layer works where `datasets` is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apexlm.data.documents import Document
from apexlm.data.messages import Conversation, check_messages
from apexlm.errors import DataError

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_split(hf_id: str, split: str, cache_dir: str | None = None) -> Any:
    """`datasets.load_dataset(hf_id, split=split)`; a one-line `DataError` when it cannot be loaded."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            "data.kind=hf_* needs the `datasets` package; install it or use a JSONL kind"
        ) from None
    local = Path(hf_id).expanduser()
    if not local.exists() and (hf_id.startswith(("/", ".", "~")) or ("/" in hf_id and local.parent.is_dir())):
        raise DataError(f"dataset path {local} does not exist; fix data.hf_id (a local path or a hub id)")
    try:
        if local.is_file():
            builder = _BUILDERS.get(local.suffix)
            if builder is None:
                raise DataError(
                    f"{local}: unsupported file type for datasets; use one of {sorted(_BUILDERS)}"
                )
            return datasets.load_dataset(
                builder, data_files={split: str(local)}, split=split, cache_dir=cache_dir
            )
        return datasets.load_dataset(hf_id, split=split, cache_dir=cache_dir)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFound, ConnectionError, ValueError, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(
            f"cannot load dataset {hf_id!r} split {split!r} ({first}); "
            "check data.hf_id / data.hf_split or point it at local files"
        ) from None


def _column(ds: Any, field: str, hf_id: str) -> list[Any]:
    if field not in ds.column_names:
        raise DataError(
            f"dataset {hf_id!r} has no column {field!r} (columns: {', '.join(ds.column_names)}); "
            "set data.text_field"
        )
    return list(ds[field])


def text_documents(ds: Any, field: str, hf_id: str) -> list[Document]:
    """Non-empty string values of column `field` as documents named `<hf_id>[<row>]`."""
    values = _column(ds, field, hf_id)
    docs = [Document(f"{hf_id}[{i}]", v) for i, v in enumerate(values) if isinstance(v, str) and v]
    if not docs:
        raise DataError(f"dataset {hf_id!r} column {field!r} holds no text; check data.text_field")
    return docs


def conversations(ds: Any, field: str, hf_id: str) -> list[Conversation]:
    """Column `field` as checked conversations (errors name `<hf_id>[<row>]`)."""
    values = _column(ds, field, hf_id)
    return [check_messages({field: v}, f"{hf_id}[{i}]", field) for i, v in enumerate(values)]
