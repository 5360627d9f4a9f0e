"""Deterministic document-level train/val splits.

A document goes to val when the hash of its name (salted with the domain) falls below `val_fraction`.
The split depends only on names, not on file order, machine or seed, so it is stable across reruns and
lets a document never be in both splits. At least one document goes to each side when there are two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def hash_unit(key: str) -> float:
    """Map a string to [0, 1) through SHA-256 (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def val_names(names: Sequence[str], val_fraction: float, salt: str) -> set[str]:
    """The names that go to val: hash below `val_fraction`, at least one, never all (if ≥ 2 names)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    scored = sorted((hash_unit(f"{salt}/{n}"), n) for n in names)
    chosen = {n for h, n in scored if h < val_fraction}
    if not chosen and scored:
        chosen = {scored[0][1]}
    if len(chosen) == len(scored) and len(scored) >= 2:
        chosen.discard(scored[-1][1])
    return chosen
