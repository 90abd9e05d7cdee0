"""Stream plumbing between the engine's blocking event stream and Gradio's async handlers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio

from medcot.events import AnswerDelta, ReasoningDelta, StreamEvent

# Streamed UI updates are coalesced to this interval: each update re-sends a diff of the whole reply, and Gradio's
# ChatInterface re-processes the conversation for it in the event loop, holding the GIL that generation needs. On 2
# CPU cores the app decoded 1.8-2.7% faster at 10 updates/s than at 20 (4 tokens per update at 40 tok/s).
UPDATE_INTERVAL_S = 0.1
_END = object()  # a stream's end, as anext() returns it to CoalescedEvents


async def iterate_in_thread(iterator: Iterator[StreamEvent], cancel: threading.Event) -> AsyncIterator[StreamEvent]:
    """Consume a blocking event stream from async code, stoppable at any moment.

    Gradio closes a sync generator on Stop by calling close() from the event loop while a worker thread may be
    inside next(); that close fails ("generator already executing") and generation runs on to the token limit.
    Here cancellation (Stop, a client's cancel, a closed tab) sets ``cancel`` instead, which the engine checks
    after every token, so the generation thread ends within a token whatever the worker thread is doing.
    """
    done = object()
    try:
        while (event := await anyio.to_thread.run_sync(next, iterator, done, abandon_on_cancel=True)) is not done:
            yield event
    finally:
        cancel.set()


class CoalescedEvents:
    """A stream's events (or the items relayed to the base column) in batches, one streamed UI update per batch, at
    most one per `interval`.

    - Fetching starts when it is made: the chat handler sends an empty reply (the pending reasoning accordion)
      first, and generation begins while Gradio sends that reply, not after it (time to first token).
    - The first batch goes out at once (time to first token), and so does any batch that ends with something other
      than text (reasoning done, finished).
    - Text is never held longer than `interval`, even while the stream stalls (a slow token, a busy machine).
    """

    def __init__(self, events: AsyncIterator[Any], interval: float) -> None:
        self._events = events
        self._interval = interval
        self._next: asyncio.Future[Any] | None = asyncio.ensure_future(anext(events, _END))
        self._held: list[Any] = []
        self._sent_at = -math.inf

    def __aiter__(self) -> CoalescedEvents:
        return self

    async def __anext__(self) -> list[Any]:
        while self._next is not None:
            wait = None if not self._held else max(0.0, self._sent_at + self._interval - time.monotonic())
            done, _ = await asyncio.wait({self._next}, timeout=wait)
            if not done:  # the interval is over and the stream has nothing new: send what is held
                return self._send()
            event = self._next.result()
            if event is _END:
                self._next = None
                break
            self._next = asyncio.ensure_future(anext(self._events, _END))
            self._held.append(event)
            text = isinstance(event, ReasoningDelta | AnswerDelta)
            if not text or time.monotonic() - self._sent_at >= self._interval:
                return self._send()
        if self._held:  # the stream ended on held text
            return self._send()
        raise StopAsyncIteration

    def _send(self) -> list[Any]:
        batch, self._held = self._held, []
        self._sent_at = time.monotonic()
        return batch

    async def aclose(self) -> None:
        """Stop the stream, also while an event is being fetched (Stop, a closed tab)."""
        if self._next is not None:
            self._next.cancel()  # cancels the fetch inside iterate_in_thread, whose cleanup sets the cancel event
            with contextlib.suppress(BaseException):  # its outcome (an error, the cancellation) no longer matters
                await self._next
            self._next = None
        await self._events.aclose()
