"""Packing: fixed blocks, eos between documents, nothing lost but the tail, cache reuse."""

from __future__ import annotations

import numpy as np

from apexlm.data.documents import Document
from apexlm.data.packing import BlockDataset, cached_stream, pack, tokenize_documents


def test_pack_keeps_every_token_but_the_tail(tok) -> None:
    texts = ["first document, quite short.", "second one 東京\n" * 5, "third: def f(): return 1\n" * 3]
    stream = tokenize_documents(tok, texts)
    per_doc = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in texts]
    assert stream.tolist() == [i for ids in per_doc for i in ids]
    for block_size in (8, 13, 32):
        blocks = pack(stream, block_size)
        assert blocks.shape == (len(stream) // block_size, block_size)
        assert blocks.reshape(-1).tolist() == stream[: blocks.size].tolist()
        assert len(stream) - blocks.size < block_size
    ds = BlockDataset(pack(stream, 8))
    item = ds[1]
    assert (
        item["input_ids"].dtype.is_floating_point is False
        and item["input_ids"].tolist() == stream[8:16].tolist()
    )
    assert item["labels"].tolist() == item["input_ids"].tolist() and item["attention_mask"].eq(1).all()


def test_stream_cache_reuses_and_keys_on_text(tok, tmp_path) -> None:
    docs = [Document("a", "alpha beta"), Document("b", "gamma delta")]
    first = cached_stream(tok, docs, tmp_path, "fp")
    assert len(list(tmp_path.glob("*.npy"))) == 1
    assert np.array_equal(cached_stream(tok, docs, tmp_path, "fp"), first)
    cached_stream(tok, [Document("a", "alpha beta!"), docs[1]], tmp_path, "fp")
    assert len(list(tmp_path.glob("*.npy"))) == 2
