"""Where prepared data lives, and the layout inside the data directory.

Every cache the data layer writes sits under one data directory so that a run never scatters files
(house rule 6). The directory is, in order: an explicit argument, `$APEXLM_DATA_DIR`, or `<repo>/data`
(`./data` when the package is installed outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "APEXLM_DATA_DIR"
DOMAINS: tuple[str, ...] = ("shakespeare", "pycode")
SPLITS: tuple[str, ...] = ("train", "val")
MANIFEST = "manifest.json"


def repo_root() -> Path | None:
    """The checkout that holds this package, or None when it is installed elsewhere."""
    root = Path(__file__).resolve().parents[3]
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root
    return None


def default_data_dir() -> Path:
    """`$APEXLM_DATA_DIR`, else `<repo>/data`, else `./data`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to use: `data_dir` when given, else the default."""
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def text_file(data_dir: Path, domain: str, split: str) -> Path:
    """`<data>/text/<domain>/<split>.jsonl`: one {"text", "source"} record per document."""
    return data_dir / "text" / domain / f"{split}.jsonl"


def tokenizer_dir(data_dir: Path) -> Path:
    """`<data>/tokenizer/`: the byte-level BPE saved with `save_pretrained`."""
    return data_dir / "tokenizer"


def instructions_file(data_dir: Path, split: str) -> Path:
    """`<data>/instructions/<split>.jsonl` for split in train/val/eval."""
    return data_dir / "instructions" / f"{split}.jsonl"


def raw_dir(data_dir: Path) -> Path:
    """`<data>/raw/`: downloaded archives, kept so reruns work without a registry."""
    return data_dir / "raw"


def token_cache_dir(data_dir: Path) -> Path:
    """`<data>/cache/tokens/`: token streams keyed by tokenizer and text."""
    return data_dir / "cache" / "tokens"
