"""Assistant-only loss: labels checked token by token, truncation, and right padding in batches."""

from __future__ import annotations

from apexlm.data.chat import IGNORE_INDEX, encode_chat, generation_prompt
from apexlm.data.collate import ChatDataset, PadCollator


def _ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def expected(tok, messages):
    """Build ids/labels independently, segment by segment, from the documented layout."""
    ids, labels = [], []
    for m in messages:
        if m["role"] == "assistant":
            head, body, tail = (
                _ids(tok, "<|assistant|>\n"),
                _ids(tok, m["content"]) + [tok.eos_token_id],
                _ids(tok, "\n"),
            )
            ids += head + body + tail
            labels += [IGNORE_INDEX] * len(head) + body + [IGNORE_INDEX] * len(tail)
        else:
            seg = _ids(tok, f"<|{m['role']}|>\n{m['content']}\n")
            ids += seg
            labels += [IGNORE_INDEX] * len(seg)
    return ids, labels


MULTI = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "Count the letters in banana."},
    {"role": "assistant", "content": "The answer is 6 — café 🎉."},
]


def test_labels_token_by_token(tok) -> None:
    for messages in (MULTI[1:3], MULTI):
        ex = encode_chat(tok, messages)
        ids, labels = expected(tok, messages)
        assert ex.input_ids == ids
        assert ex.labels == labels
        # the loss tokens are exactly the assistant contents followed by eos
        assert tok.decode([t for t in ex.labels if t != IGNORE_INDEX]) == "42<|eos|>" + (
            "The answer is 6 — café 🎉.<|eos|>" if len(messages) == 5 else ""
        )


def test_matches_transformers_assistant_mask(tok) -> None:
    ex = encode_chat(tok, MULTI)
    hf = tok.apply_chat_template(MULTI, return_assistant_tokens_mask=True, return_dict=True)
    assert hf["input_ids"] == ex.input_ids
    assert hf["assistant_masks"] == [int(label != IGNORE_INDEX) for label in ex.labels]


def test_truncation_and_generation_prompt(tok) -> None:
    full = encode_chat(tok, MULTI)
    cut = encode_chat(tok, MULTI, max_length=10)
    assert cut.input_ids == full.input_ids[:10] and cut.labels == full.labels[:10]
    prompt = generation_prompt(tok, MULTI[1:2])
    assert encode_chat(tok, MULTI[1:3]).input_ids[: len(prompt)] == prompt


def test_padding_collator(tok) -> None:
    examples = [encode_chat(tok, MULTI[1:3]), encode_chat(tok, MULTI)]
    collate = PadCollator(tok.pad_token_id, max_length=512, multiple_of=8)
    ds = ChatDataset(examples)
    batch = collate([ds[0], ds[1]])
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= len(examples[1].input_ids)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        assert batch["input_ids"][row, :n].tolist() == ex.input_ids
        assert batch["labels"][row, :n].tolist() == ex.labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, n:].eq(tok.pad_token_id).all()
        assert batch["labels"][row, n:].eq(IGNORE_INDEX).all()
    assert ds.num_tokens == int(batch["attention_mask"].sum())
