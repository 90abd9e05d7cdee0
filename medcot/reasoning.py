"""Incremental split of the model's `<think>reasoning</think>answer` stream into typed events."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from medcot.chunks import held_suffix
from medcot.events import AnswerDelta, Event, ReasoningDelta, ReasoningDone

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
_TAGS = (OPEN_TAG, CLOSE_TAG)
# Tags are ASCII: fold ASCII letters only, so the folded text keeps every index (str.lower turns "İ" into 2 chars).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_START, _REASONING, _ANSWER, _CLOSED = range(4)


class ThinkParser:
    """Feed text chunks as they stream; get events that never contain a literal tag.

    Handles tags split across chunks or in any case (as the card's ``strip_think``), no ``<think>`` at all, one left
    open at the end, and ``<think>`` repeated after a prompt that opened it (``prefilled``). Stray tags are dropped.
    """

    def __init__(self, prefilled: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buffer = ""
        self._state = _START
        self._skip_space = True
        self._started_at = 0.0
        self.reasoning = ""
        self.answer = ""
        self.saw_reasoning = False
        if prefilled:
            self._enter_reasoning()

    @property
    def in_reasoning(self) -> bool:
        return self._state == _REASONING

    def _enter_reasoning(self) -> None:
        self._state = _REASONING
        self._skip_space = True
        self._started_at = self._clock()
        self.saw_reasoning = True

    def _emit(self, text: str) -> list[Event]:
        if not text:
            return []
        if self._state == _REASONING:
            self.reasoning += text
            return [ReasoningDelta(text)]
        self.answer += text
        return [AnswerDelta(text)]

    def feed(self, chunk: str) -> list[Event]:
        self._buffer += chunk
        return self._drain(final=False)

    def close(self) -> list[Event]:
        """The stream ended: flush what was held back and close an unfinished reasoning block."""
        events = self._drain(final=True)
        if self._state == _REASONING:
            events.append(ReasoningDone(self._clock() - self._started_at, cut_off=True))
        self._state = _CLOSED
        return events

    def _drain(self, final: bool) -> list[Event]:
        events: list[Event] = []
        while self._buffer and self._state != _CLOSED:
            if self._state == _START:
                stripped = self._buffer.lstrip()
                lower = stripped.translate(_ASCII_LOWER)
                if lower.startswith(OPEN_TAG):
                    self._buffer = stripped[len(OPEN_TAG) :]
                    self._enter_reasoning()
                elif not final and OPEN_TAG.startswith(lower):
                    break  # only whitespace or the start of "<think>" so far
                else:
                    self._state = _ANSWER
                continue
            if self._skip_space:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break
                self._skip_space = False
            lower = self._buffer.translate(_ASCII_LOWER)
            found = [(i, tag) for tag in _TAGS if (i := lower.find(tag)) >= 0]
            if found:
                index, tag = min(found)
                events += self._emit(self._buffer[:index])
                self._buffer = self._buffer[index + len(tag) :]
                if self._state == _REASONING:
                    self._skip_space = True  # the newline after </think>, or after a repeated <think> (prefilled)
                    if tag == CLOSE_TAG:
                        events.append(ReasoningDone(self._clock() - self._started_at))
                        self._state = _ANSWER
                continue
            keep = 0 if final else held_suffix(lower, _TAGS)
            events += self._emit(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            break
        return events


def split_reasoning(chunks: Iterable[str], prefilled: bool = False) -> tuple[str, str]:
    """Parse a whole output: (reasoning, answer)."""
    parser = ThinkParser(prefilled=prefilled)
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    return parser.reasoning, parser.answer
