"""Per-unit activation magnitudes: padding excluded; normalised spread statistics."""

from __future__ import annotations

import pytest
import torch

from apexlm.analysis.activations import activation_magnitudes, distribution_stats
from tests.support.models import llama


def test_padding_tokens_do_not_count() -> None:
    """Right-padded batch == the two sequences alone (sum of squares adds up over sequences)."""
    model = llama(hidden=32, heads=4, kv=2, ffn=40)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 97, (1, 9), generator=g), torch.randint(0, 97, (1, 5), generator=g)
    garbage = torch.randint(0, 97, (1, 4), generator=g)
    padded = {"input_ids": torch.cat([a, torch.cat([b, garbage], 1)]),
              "attention_mask": torch.tensor([[1] * 9, [1] * 5 + [0] * 4])}
    together = activation_magnitudes(model, [padded])
    alone = activation_magnitudes(model, [{"input_ids": a}, {"input_ids": b}])
    for kind in ("attn", "ffn"):
        for x, y in zip(together[kind], alone[kind], strict=True):
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)


def test_spread_statistics() -> None:
    mags = {"attn": [torch.ones(4), torch.tensor([1.0, 3.0])], "ffn": [torch.tensor([2.0, 2.0, 2.0, 6.0])]}
    stats = distribution_stats(mags)
    assert stats["attn"]["std"] == pytest.approx([0.0, 0.5])          # [1,1,1,1]; [0.5, 1.5]
    assert stats["attn"]["share_above_mean"] == pytest.approx([0.0, 0.5])
    assert stats["attn"]["std_mean"] == pytest.approx(0.25)
    assert stats["ffn"]["share_above_mean"] == pytest.approx([0.25])  # [2/3, 2/3, 2/3, 2]
