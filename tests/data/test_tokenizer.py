"""Tokenizer: exact round trip, special tokens, chat template on disk, load errors."""

from __future__ import annotations

import pytest

from apexlm.data.tokenizer import EOS, PAD, ROLE_TOKENS, load_tokenizer, tokenizer_fingerprint
from apexlm.errors import DataError

SAMPLES = [
    "plain ASCII, with  double  spaces,\ttabs\nand newlines\n\n",
    "  leading and trailing spaces  ",
    "unicode: café naïve 東京 Ελληνικά 🎉🙂 — ‘quotes’ \u00a0nbsp \r\n crlf",
    "code:\n    def f(x):\n        return x ** 2  # comment\n",
    "",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_special_tokens_and_template(tok, tokenizer_dir) -> None:
    assert tok.pad_token == PAD and tok.eos_token == EOS
    assert [tok.convert_tokens_to_ids(t) for t in (PAD, "<|bos|>", EOS)] == [0, 1, 2]
    for role in ROLE_TOKENS:  # role markers are single, unsplittable tokens
        assert tok.encode(role, add_special_tokens=False) == [tok.convert_tokens_to_ids(role)]
    assert (tokenizer_dir / "chat_template.jinja").is_file()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nhi\n<|assistant|>\n"


def test_load_errors_and_pad_default(tmp_path, tok) -> None:
    with pytest.raises(DataError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable tokenizer at"):
        load_tokenizer(tmp_path / "empty")
    nopad = tmp_path / "nopad"
    tok.pad_token = None
    try:
        tok.save_pretrained(str(nopad))
    finally:
        tok.pad_token = PAD
    reloaded = load_tokenizer(nopad)
    assert reloaded.pad_token == EOS
    assert tokenizer_fingerprint(reloaded) != tokenizer_fingerprint(tok)  # pad id is part of the key
