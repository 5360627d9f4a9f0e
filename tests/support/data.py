"""Small data samples for the data tests: a mixed corpus (prose, code, non-ASCII, numbers) and conversations."""

from __future__ import annotations

from typing import Any

CORPUS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 8,
    'def add(a, b):\n    """Return a + b."""\n    return a + b\n\nprint(add(2, 3))\n' * 8,
    "Café, naïve, 東京, Ελληνικά, emoji 🎉 — and ASCII.\n" * 4,
    "What is 12 + 30? The answer is 42. Count the letters in banana.\n" * 8,
]


def conversation(i: int) -> dict[str, Any]:
    """A small valid conversation whose content depends on i."""
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"The answer is {2 * i}."},
        ]
    }
