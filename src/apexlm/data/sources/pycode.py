"""Python standard-library sources of the running interpreter ("pycode" domain).

Every machine has them, so the code domain needs no download. Tests, IDLE, demos, bundled wheels and
generated tables (`encodings`, `pydoc_data`) are left out because they are repetitive or not code. The
files are taken in a hash order of their relative paths until the byte cap is reached, so the sample
spreads over the whole library and is the same on every run; the output is then sorted by path.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from apexlm.data.documents import Document
from apexlm.data.split import hash_unit

EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "encodings",
        "pydoc_data",
        "tkinter",
        "config-3",
    }
)
MAX_FILE_BYTES = 300_000
DEFAULT_CAP_BYTES = 6_000_000
LICENSE = "PSF-2.0 (Python standard library)"


def stdlib_dir() -> Path:
    """The interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def origin() -> str:
    """A one-line description of where the code comes from (records the Python version)."""
    return f"Python {sys.version.split()[0]} standard library sources (*.py), tests and tools excluded"


def _candidates(root: Path) -> list[Path]:
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if any(part in EXCLUDED_DIRS or part.startswith(("config-", ".")) for part in rel.parts[:-1]):
            continue
        if p.is_file() and 0 < p.stat().st_size <= MAX_FILE_BYTES:
            files.append(p)
    return files


def read_documents(cap_bytes: int = DEFAULT_CAP_BYTES, root: Path | None = None) -> list[Document]:
    """Up to about `cap_bytes` of UTF-8 stdlib modules, one document per file, sorted by path."""
    root = root or stdlib_dir()
    ordered = sorted(_candidates(root), key=lambda p: hash_unit(p.relative_to(root).as_posix()))
    docs, total = [], 0
    for path in ordered:
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        size = len(text.encode("utf-8"))
        if total + size > cap_bytes:
            continue
        docs.append(Document(path.relative_to(root).as_posix(), text))
        total += size
    return sorted(docs, key=lambda d: d.source)
