"""What was asked (Query), the question's checks, and the request that passed them (Request). A Query is the one
argument of every stream function (StreamFn: Engine.stream, the ZeroGPU wrapper, test wrappers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from medcot.config import GenerationParams
from medcot.errors import InputError
from medcot.events import StreamEvent
from medcot.prompt import EncodedPrompt, Turn
from medcot.prompt_styles import CARD, PromptStyle

MAX_QUESTION_CHARS = 8000  # far above any real question; keeps tokenization of hostile input cheap


@dataclass(frozen=True)
class Query:
    """One question as a client asked it, before any check (Engine.prepare checks it)."""

    question: str
    history: Sequence[Turn] = ()
    params: GenerationParams | None = None  # None: the engine's defaults
    use_adapter: bool = True  # False: the base model's answer (the comparison)


@dataclass(frozen=True)
class Request:
    """A request that passed Engine.prepare's checks; picklable, as a ZeroGPU worker receives it."""

    prompt: EncodedPrompt
    params: GenerationParams
    use_adapter: bool = True
    style: PromptStyle = CARD  # how the prompt was built: its stop texts and whether it opened the reasoning


class StreamFn(Protocol):
    """One query's events; setting ``cancel`` stops it within a token. Engine.stream has this signature."""

    def __call__(self, query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]: ...


def clean_question(question: object) -> str:
    """Validate a question from any client; raise InputError with a readable message."""
    if not isinstance(question, str):
        raise InputError(f"The question must be text, not {type(question).__name__}.")
    # Lone surrogates cannot be encoded or tokenized; NUL and other C0 controls carry nothing for the model.
    text = question.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable() or ch == " " or ord(ch) > 0x9F)
    text = text.strip()
    if not text:
        raise InputError("Please type a question.")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(f"The question is too long ({len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}).")
    return text
