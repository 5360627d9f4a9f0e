"""Fixtures of the data tests: a small tokenizer trained in-process on a few KB, and a JSONL file writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apexlm.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from tests.support.data import CORPUS


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-token byte-level BPE with our specials and chat template, saved once per session."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_tokenizer(train_tokenizer(CORPUS, vocab_size=400), path)
    return path


@pytest.fixture(scope="session")
def tok(tokenizer_dir: Path):
    """The small tokenizer, loaded the way training code loads it."""
    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def write_jsonl() -> Callable[[Path, list[Any]], Path]:
    """Write records (dicts, or raw strings for deliberately broken lines) as JSONL."""

    def _write(path: Path, records: list[Any]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return _write
