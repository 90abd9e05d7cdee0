"""What every backend streams (Chunk: text and the tokens made so far) and the stop texts cut out of it.
Torch-free, so that server mode (medcot.backends.server) streams without importing torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int  # generated tokens so far, this chunk's included


def held_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into one of ``markers`` (held back for now)."""
    for size in range(min(len(text), max(map(len, markers), default=1) - 1), 0, -1):
        tail = text[-size:]
        if any(marker.startswith(tail) for marker in markers):
            return size
    return 0


class StopTextFilter:
    """Streamed text up to (not including) the first stop text. A marker can arrive split ("…###", " Question:"),
    so a tail that may begin one is held back until it stops matching."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = tuple(text for text in texts if text)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held) that is certainly shown; nothing once a marker was seen."""
        if self.stopped:
            return ""
        self.pending += text
        found = [index for index in (self.pending.find(marker) for marker in self.texts) if index >= 0]
        if found:
            self.stopped = True
            shown, self.pending = self.pending[: min(found)], ""
            return shown
        cut = len(self.pending) - held_suffix(self.pending, self.texts)
        shown, self.pending = self.pending[:cut], self.pending[cut:]
        return shown

    def close(self) -> str:
        """At the end of the stream: whatever was held was not a marker after all."""
        shown, self.pending = ("" if self.stopped else self.pending), ""
        return shown
