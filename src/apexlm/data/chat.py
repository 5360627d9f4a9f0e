"""Chat formatting with assistant-only loss.

`CHAT_TEMPLATE` is the Jinja template of our tokenizer, in the Tulu-v2 layout:

    <|system|>\\n{system}\\n<|user|>\\n{user}\\n<|assistant|>\\n{answer}<|eos|>\\n

`encode_chat` works with *any* tokenizer that has a chat template (ours, SmolLM2's, a user's): it renders
the conversation once, finds each assistant turn's characters by rendering the prefix up to that turn
(with and without the turn), and labels exactly the tokens that overlap those characters. The span
includes the end-of-turn marker the template writes after the content (`<|eos|>` here), so the model
learns to stop, and excludes trailing whitespace after it. Everything else gets label -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from apexlm.errors import DataError

IGNORE_INDEX = -100

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{%- else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)

Message = dict[str, str]


@dataclass(frozen=True)
class ChatExample:
    """One tokenized conversation: `input_ids` and `labels` (-100 outside assistant turns), same length."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_loss_tokens(self) -> int:
        """How many tokens carry loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """The conversation as text through the tokenizer's chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            "the tokenizer has no chat template; use the apexlm tokenizer "
            "(python -m apexlm.data.prepare) or one that ships a template"
        )
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) character span of each assistant turn incl. its end marker])."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise DataError(
                "the tokenizer's chat template renders earlier turns differently once later "
                "turns are added, so assistant tokens cannot be located; use another template"
            )
        start = len(prefix)
        spans.append((start, max(start, len(upto.rstrip()))))
    return full, spans


def encode_chat(tokenizer, messages: Sequence[Message], max_length: int | None = None) -> ChatExample:
    """Token ids and labels of a conversation; labels keep only assistant tokens; truncated on the right."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [
        tok if any(s < span_end and e > span_start for span_start, span_end in spans) else IGNORE_INDEX
        for tok, (s, e) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ChatExample(ids, labels)


def generation_prompt(tokenizer, messages: Sequence[Message]) -> list[int]:
    """Token ids of `messages` followed by the assistant header, ready for `generate`."""
    text = render(tokenizer, messages, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
