"""Deterministic document-level train/val splits and subsets.

The `val_fraction` share of documents with the smallest hash of their name (salted with the domain)
goes to val. The split depends only on names, not on file order, machine or seed, so it is stable
across reruns and a document is never in both splits. Each side gets at least one document when
there are two or more.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

_VAL_NAME = re.compile(r"^(val|valid|validation|dev)([-_.]|$)", re.I)
_TRAIN_NAME = re.compile(r"^train([-_.]|$)", re.I)


def is_val_name(stem: str) -> bool:
    """True for file stems that name a validation split: val, valid, validation, dev (+ `-`/`_` suffix)."""
    return bool(_VAL_NAME.match(stem))


def is_train_name(stem: str) -> bool:
    """True for file stems that name a training split: train, train-00001, train_mix, ..."""
    return bool(_TRAIN_NAME.match(stem))


def hash_unit(key: str) -> float:
    """Map a string to [0, 1) through SHA-256 (stable across processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def val_names(names: Sequence[str], val_fraction: float, salt: str) -> set[str]:
    """The names that go to val: the round(val_fraction * n) names (at least one, never all when there
    are two or more) with the smallest salted hash."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    unique = sorted(set(names))
    if not unique:
        return set()
    count = max(1, round(val_fraction * len(unique)))
    if len(unique) >= 2:
        count = min(count, len(unique) - 1)
    ranked = sorted(unique, key=lambda n: (hash_unit(f"{salt}/{n}"), n))
    return set(ranked[:count])


def seeded_subset(n: int, k: int, seed: int) -> list[int]:
    """k distinct indices of range(n), chosen by `seed`, in increasing order (all when k >= n)."""
    if k >= n:
        return list(range(n))
    rng = random.Random(seed)
    return sorted(rng.sample(range(n), k))


def evenly_spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all when k >= n): a seed-free, representative subset."""
    if k >= n:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]
