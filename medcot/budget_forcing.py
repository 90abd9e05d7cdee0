"""Budget forcing: the answer after a reasoning the model left open.

The primed base sometimes ends its turn (a stop text, EOS) without writing ``</think>``: its reasoning then stands
with no answer (3 of 36 questions in the eval). As "budget forcing" does for reasoning models, its text and the
closing tag then go back in as prompt, and it writes the answer with the tokens left. The tag arrives as a ClosingTag
chunk, so the stats can say the app closed the reasoning.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from medcot.backends import Backend
from medcot.chunks import Chunk
from medcot.prompt import encode_text
from medcot.reasoning import CLOSE_TAG
from medcot.request import Request


@dataclass(frozen=True)
class ClosingTag(Chunk):
    """The ``</think>`` the app wrote for a model that left its reasoning open."""


def closing_open_reasoning(backend: Backend, request: Request, cancel: threading.Event) -> Iterator[Chunk]:
    """The backend's chunks for ``request``; for a prompt that opened the reasoning and a model that never closed
    it, then a ClosingTag and the answer generated after it (token counts go on from the first pass's)."""
    input_ids, params, use_adapter = request.prompt.input_ids, request.params, request.use_adapter
    stop_texts = request.style.stop_texts
    chunks = backend.stream(input_ids, params, cancel, use_adapter, stop_texts)
    written: list[str] = []
    tokens = 0
    try:
        for chunk in chunks:
            written.append(chunk.text)
            tokens = chunk.tokens
            yield chunk
    finally:
        chunks.close()
    text = "".join(written)
    left = params.max_new_tokens - tokens
    if not request.style.opens_reasoning or CLOSE_TAG in text.lower() or left <= 0 or cancel.is_set():
        return
    closing = f"\n{CLOSE_TAG}\n"
    yield ClosingTag(closing, tokens)
    ids = input_ids + encode_text(backend.tokenizer, text.rstrip() + closing)
    answer = backend.stream(ids, replace(params, max_new_tokens=left), cancel, use_adapter, stop_texts)
    try:
        for chunk in answer:
            yield Chunk(chunk.text, tokens + chunk.tokens)
    finally:
        answer.close()
