"""From generated chunks to an answer's events: reasoning and answer text, then Finished with the stats; and a whole
answer collected from those events (Engine.ask)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field

from medcot.budget_forcing import ClosingTag
from medcot.chunks import Chunk
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats, StreamEvent
from medcot.reasoning import ThinkParser
from medcot.request import Request


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

    Timing starts here: the time to first text counts from the call, so it includes the prefill.
    """
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
