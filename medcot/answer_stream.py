"""A backend's chunks for a request as an answer's events: reasoning and answer text, then Finished with the stats;
and a whole answer collected from those events (Engine.ask).

Budget forcing: the primed base sometimes ends its turn without ``</think>``, its reasoning then standing with no
answer (3 of 36 questions in the eval). As budget forcing does for reasoning models, the app then writes the tag
(a ClosingTag chunk, so the stats can say so) and the model answers after it with the tokens left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace

from medcot.backends import Backend
from medcot.chunks import Chunk
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats, StreamEvent
from medcot.prompt import encode_text
from medcot.reasoning import CLOSE_TAG, ThinkParser
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


@dataclass
class Answer:
    answer: str
    reasoning: str
    stats: Stats | None = None
    events: list[StreamEvent] = field(default_factory=list)

    @classmethod
    def from_events(cls, events: Iterable[StreamEvent]) -> Answer:
        """A whole answer: the final answer, the reasoning and the stats."""
        events = list(events)
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
        stats = next((e.stats for e in events if isinstance(e, Finished)), None)
        return cls(answer.strip(), reasoning.strip(), stats, events)


def answer_events(
    chunks: Generator[Chunk, None, None], request: Request, cancel: threading.Event
) -> Iterator[StreamEvent]:
    """``chunks`` (closed however this ends) parsed into reasoning/answer events, then Finished with their stats.
    The time to first text counts from this call, so it includes the prefill."""
    params = request.params
    started = time.monotonic()
    parser = ThinkParser(prefilled=request.style.opens_reasoning)
    first: float | None = None
    first_tokens = 1
    tokens = 0
    reasoning_tokens: int | None = None  # fixed when </think> arrives
    closed_by_app = False
    try:
        for chunk in chunks:
            closed_by_app = closed_by_app or isinstance(chunk, ClosingTag)
            if first is None and chunk.text:  # a last empty chunk only carries the token count
                first = time.monotonic() - started
                first_tokens = chunk.tokens
            tokens = chunk.tokens
            events = parser.feed(chunk.text)
            if any(isinstance(e, ReasoningDone) for e in events):
                reasoning_tokens = tokens
            yield from events
    finally:
        chunks.close()
    events = parser.close()
    yield from events
    cut_off = any(isinstance(e, ReasoningDone) and e.cut_off for e in events)
    if reasoning_tokens is None:
        reasoning_tokens = tokens if cut_off else 0
    yield Finished(
        Stats(
            prompt_tokens=len(request.prompt.input_ids),
            new_tokens=tokens,
            reasoning_tokens=reasoning_tokens,
            answer_tokens=tokens - reasoning_tokens,
            time_to_first_token=first,
            seconds=time.monotonic() - started,
            hit_token_limit=tokens >= params.max_new_tokens,
            reasoning_cut_off=cut_off,
            stopped=cancel.is_set() and tokens < params.max_new_tokens,
            turns_dropped=request.prompt.turns_dropped,
            tokens_at_first_text=first_tokens,
            reasoning_closed_by_app=closed_by_app,
        )
    )
