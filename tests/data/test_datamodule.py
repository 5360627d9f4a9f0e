"""Datamodules on local user data: text_files, hf_text via `datasets`, jsonl/hf messages, determinism."""

from __future__ import annotations

import torch

from apexlm.data.chat import IGNORE_INDEX
from apexlm.data.datamodule import build_datamodule, text_val_loader
from tests.support.data import CORPUS, conversation


def _text_dir(root):
    root.mkdir()
    for i, text in enumerate(CORPUS):
        (root / f"doc{i}.txt").write_text(text * 3, encoding="utf-8")
    (root / "notes.md").write_text("# Notes\n" + CORPUS[0], encoding="utf-8")
    (root / "skip.bin").write_bytes(b"\xff\xfe")  # not a text suffix: ignored
    return root


def _check_batch(batch, batch_size: int, block_size: int) -> None:
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for v in batch.values():
        assert v.dtype == torch.long and v.shape[0] == batch_size and v.shape[1] <= block_size


def test_text_files_dir_packs_and_is_deterministic(tok, tmp_path) -> None:
    cfg = {
        "kind": "text_files",
        "path": str(_text_dir(tmp_path / "corpus")),
        "block_size": 16,
        "batch_size": 4,
        "eval_batch_size": 2,
        "val_fraction": 0.2,
        "data_dir": str(tmp_path / "d"),
    }
    dm = build_datamodule(cfg, tok, seed=3)
    assert dm.train_size > 4 and dm.num_train_tokens == dm.train_size * 16
    batch = next(iter(dm.train_dataloader()))
    _check_batch(batch, 4, 16)
    assert torch.equal(batch["labels"], batch["input_ids"]) and dm.token_count(batch) == 64
    again = next(iter(build_datamodule(cfg, tok, seed=3).train_dataloader()))
    other = next(iter(build_datamodule(cfg, tok, seed=4).train_dataloader()))
    assert torch.equal(again["input_ids"], batch["input_ids"])
    assert not torch.equal(other["input_ids"], batch["input_ids"])
    capped = build_datamodule({**cfg, "max_train_samples": 5, "max_val_samples": 1}, tok, seed=3)
    assert (capped.train_size, capped.val_size) == (5, 1)
    loader = text_val_loader(cfg["path"], tok, 16, 8, data_dir=cfg["data_dir"])
    assert next(iter(loader))["input_ids"].shape[1] == 16


def test_hf_text_through_datasets_on_local_json(tok, tmp_path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"body": t * 2} for t in CORPUS * 3])
    cfg = {
        "kind": "hf_text",
        "hf_id": str(path),
        "text_field": "body",
        "block_size": 16,
        "batch_size": 2,
        "hf_cache_dir": str(tmp_path / "hf"),
        "data_dir": str(tmp_path / "d"),
        "val_fraction": 0.2,
    }
    dm = build_datamodule(cfg, tok, seed=0)
    _check_batch(next(iter(dm.train_dataloader())), 2, 16)
    assert dm.val_size > 0


def test_jsonl_messages_and_hf_messages(tok, tmp_path, write_jsonl) -> None:
    records = [conversation(i) for i in range(40)]
    path = write_jsonl(tmp_path / "chat" / "sft.jsonl", records)
    base = {"block_size": 64, "batch_size": 4, "data_dir": str(tmp_path / "d"), "val_fraction": 0.1}
    for cfg in (
        {"kind": "jsonl_messages", "path": str(path.parent)},
        {"kind": "hf_messages", "hf_id": str(path), "hf_cache_dir": str(tmp_path / "hf")},
    ):
        dm = build_datamodule({**base, **cfg}, tok, seed=0)
        assert (dm.train_size, dm.val_size) == (36, 4)
        batch = next(iter(dm.train_dataloader()))
        _check_batch(batch, 4, 64)
        mask = batch["attention_mask"].bool()
        assert batch["labels"][~mask].eq(IGNORE_INDEX).all()
        assert batch["input_ids"][~mask].eq(tok.pad_token_id).all()
        assert dm.token_count(batch) == int(mask.sum())
        loss = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
        assert tok.decode(loss).startswith("The answer is") and loss[-1] == tok.eos_token_id


def test_messages_folder_with_val_file(tok, tmp_path, write_jsonl) -> None:
    write_jsonl(tmp_path / "m" / "train.jsonl", [conversation(i) for i in range(8)])
    write_jsonl(tmp_path / "m" / "val.jsonl", [conversation(i) for i in range(100, 103)])
    dm = build_datamodule(
        {"kind": "jsonl_messages", "path": str(tmp_path / "m"), "block_size": 64, "batch_size": 4},
        tok,
        seed=0,
    )
    assert (dm.train_size, dm.val_size) == (8, 3)
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"].shape[0] == 3


def test_text_files_val_file_and_single_document(tok, tmp_path) -> None:
    from apexlm.data.split import is_val_name

    assert is_val_name("val") and is_val_name("valid-00001") and not is_val_name("values")
    root = tmp_path / "c"
    root.mkdir()
    (root / "train.txt").write_text(CORPUS[0] * 4, encoding="utf-8")
    (root / "values.py").write_text(CORPUS[1] * 4, encoding="utf-8")  # a train file despite its name
    (root / "val.txt").write_text(CORPUS[3], encoding="utf-8")
    cfg = {"kind": "text_files", "block_size": 8, "batch_size": 2, "data_dir": str(tmp_path / "d")}
    dm = build_datamodule({**cfg, "path": str(root)}, tok, seed=0)
    val_tokens = len(tok.encode(CORPUS[3], add_special_tokens=False)) + 1
    assert dm.val_size == val_tokens // 8
    single = build_datamodule({**cfg, "path": str(root / "train.txt"), "val_fraction": 0.25}, tok, seed=0)
    total = (len(tok.encode(CORPUS[0] * 4, add_special_tokens=False)) + 1) // 8
    assert single.train_size + single.val_size == total and single.val_size == -(-total // 4)
