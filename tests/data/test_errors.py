"""Bad data and config stop the run before training with a one-line DataError naming the problem."""

from __future__ import annotations

import pytest

from apexlm.data.datamodule import build_datamodule
from apexlm.errors import DataError
from tests.support.data import conversation


def _build(tok, **cfg):
    return build_datamodule({"block_size": 32, "batch_size": 2, **cfg}, tok, seed=0)


def _raises(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tok, tmp_path) -> None:
    _raises("does not exist", _build, tok, kind="text_files", path=str(tmp_path / "missing"))
    _raises("does not exist", _build, tok, kind="jsonl_messages", path=str(tmp_path / "missing.jsonl"))


def test_empty_data(tok, tmp_path, write_jsonl) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("   \n", encoding="utf-8")
    _raises("every file is empty", _build, tok, kind="text_files", path=str(tmp_path / "t"))
    (tmp_path / "none").mkdir()
    _raises("no .*files under", _build, tok, kind="text_files", path=str(tmp_path / "none"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    _raises("no conversations", _build, tok, kind="jsonl_messages", path=str(empty))


def test_malformed_jsonl_names_file_and_line(tok, tmp_path, write_jsonl) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [conversation(0), conversation(1), '{"messages": [oops'])
    message = _raises("malformed JSON", _build, tok, kind="jsonl_messages", path=str(path))
    assert f"{path}:3:" in message


def test_bad_records(tok, tmp_path, write_jsonl) -> None:
    no_messages = write_jsonl(tmp_path / "a.jsonl", [conversation(0), {"prompt": "hi", "response": "yo"}])
    assert f"{no_messages}:2:" in _raises(
        "no 'messages' list", _build, tok, kind="jsonl_messages", path=str(no_messages)
    )
    bad_role = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path = write_jsonl(tmp_path / "b.jsonl", [bad_role])
    _raises("role 'human'", _build, tok, kind="jsonl_messages", path=str(path))
    only_user = {"messages": [{"role": "user", "content": "hi"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [only_user])
    _raises("no assistant message", _build, tok, kind="jsonl_messages", path=str(path))


def test_non_utf8_text_names_the_file(tok, tmp_path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "ok.txt").write_text("fine text " * 50, encoding="utf-8")
    bad = tmp_path / "t" / "latin1.txt"
    bad.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    assert str(bad) in _raises("not UTF-8", _build, tok, kind="text_files", path=str(tmp_path / "t"))


def test_config_and_size_checks(tok, tmp_path, write_jsonl) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("tiny text\n" * 3, encoding="utf-8")
    (tmp_path / "t" / "b.txt").write_text("more tiny text\n" * 3, encoding="utf-8")
    _raises("block_size", _build, tok, kind="text_files", path=str(tmp_path / "t"), block_size=4)
    _raises("data.kind", _build, tok, kind="nonsense", path=str(tmp_path / "t"))
    _raises(
        "fewer than batch_size",
        _build,
        tok,
        kind="text_files",
        path=str(tmp_path / "t"),
        block_size=8,
        batch_size=64,
        data_dir=str(tmp_path / "d"),
    )
    chats = write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(6)])
    _raises("fewer than batch_size", _build, tok, kind="jsonl_messages", path=str(chats), batch_size=16)


def test_missing_local_hub_paths_fail_fast(tok, tmp_path) -> None:
    from apexlm.data.tokenizer import load_tokenizer

    _raises("does not exist", _build, tok, kind="hf_text", hf_id=str(tmp_path / "missing" / "x.jsonl"))
    _raises("tokenizer not found", load_tokenizer, str(tmp_path / "no_tokenizer"))
