"""`<data>/manifest.json`: what `prepare` made, from what, and the hash of every file it wrote.

The manifest is written last, so its presence means a complete preparation. Its `params` and file
hashes make reruns idempotent: when both match, `prepare` has nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from apexlm.data.fileio import atomic_write_text, sha256_file
from apexlm.data.paths import MANIFEST

FORMAT = 1


def file_entries(root: Path, paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} for files under `root`."""
    return {
        p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(paths)
    }


def all_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every file recorded by any source of the manifest."""
    out: dict[str, dict[str, Any]] = {}
    for source in manifest.get("sources", {}).values():
        out.update(source.get("files", {}))
    return out


def load(data_dir: Path) -> dict[str, Any] | None:
    """The manifest, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def is_complete(data_dir: Path, manifest: dict[str, Any] | None) -> bool:
    """True when the manifest exists and every file it lists is present (no hashing: fast)."""
    return bool(manifest) and all((data_dir / rel).is_file() for rel in all_files(manifest or {}))


def is_current(data_dir: Path, manifest: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """True when the manifest was made with `params` and every file still has its recorded hash."""
    if not is_complete(data_dir, manifest) or (manifest or {}).get("params") != params:
        return False
    for rel, entry in all_files(manifest or {}).items():
        path = data_dir / rel
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return False
    return True


def save(data_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically; returns its path."""
    path = data_dir / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
