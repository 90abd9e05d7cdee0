"""Stream plumbing between the engine's blocking event stream and Gradio's async handlers, and the bounded wait for a
loading model (a question asked meanwhile waits for it instead of being refused)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio

from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, StreamEvent

# One streamed update per 100 ms at most: each re-sends a diff of the whole reply, processed in the event loop under
# the GIL that generation needs (10 updates/s decoded 1.8-2.7% faster than 20 on 2 cores; docs/benchmark.md).
UPDATE_INTERVAL_S = 0.1
POLL_S = 1.0  # how often a chat waiting for the model shows the load's progress (the status line's pace)
_END = object()  # a stream's end, as anext() returns it to CoalescedEvents
_DONE = object()  # a blocking stream's end, as next() returns it to iterate_in_thread


class _Fetcher:
    """next() on a blocking stream from worker threads, handing each Finished to ``on_finished``; once abandoned
    (Stop, a closed tab) it reads the rest itself, for the Finished the Stop handler shows."""

    def __init__(self, iterator: Iterator[StreamEvent], on_finished: Callable[[Finished], None] | None) -> None:
        self._iterator = iterator
        self._on_finished = on_finished
        self._lock = threading.Lock()
        self._in_flight = self._abandoned = self._ended = False

    def start(self) -> None:
        with self._lock:
            self._in_flight = True

    def fetch(self) -> Any:
        event = self._next()
        with self._lock:
            self._in_flight = False
            drain = self._abandoned and event is not _DONE
        if drain:  # nobody takes this event any more: read the rest here, for its Finished
            self._drain()
        return event

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            if self._in_flight or self._ended or self._on_finished is None:
                return  # the call in flight drains when it returns
        threading.Thread(target=self._drain, name="medcot-drain", daemon=True).start()

    def _next(self) -> Any:
        event = next(self._iterator, _DONE)
        if event is _DONE:
            self._ended = True
        elif isinstance(event, Finished) and self._on_finished is not None:
            self._on_finished(event)
        return event

    def _drain(self) -> None:
        with contextlib.suppress(Exception):  # the answer is over for its page; a late failure only loses the stats
            while self._next() is not _DONE:
                pass


def when_task_ends(callback: Callable[[], object]) -> None:
    """Call ``callback`` once the asyncio task running the caller ends: finished, failed or cancelled.

    A Stop that lands while Gradio 6.31 post-processes a generator's first update drops the generator unclosed, so
    its streams would run on to the token limit (README, *Server mode*); the task's end comes whatever Gradio did.
    """
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(lambda _task: callback())


async def iterate_in_thread(
    iterator: Iterator[StreamEvent],
    cancel: threading.Event,
    on_finished: Callable[[Finished], None] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Consume a blocking event stream from async code, stoppable at any moment.

    Gradio's close() of a sync generator fails while a worker thread is inside next(), and generation runs on; here
    cancellation sets ``cancel``, which the engine checks after every token. The stream's Finished goes to
    ``on_finished`` also when it comes after the cancellation.
    """
    fetcher = _Fetcher(iterator, on_finished)
    try:
        while True:
            fetcher.start()
            event = await anyio.to_thread.run_sync(fetcher.fetch, abandon_on_cancel=True)
            if event is _DONE:
                return
            yield event
    finally:
        cancel.set()
        fetcher.abandon()


class CoalescedEvents:
    """A stream's events (or the items relayed to the base column) in batches, one UI update per batch, at most one
    per ``interval``. Fetching starts at once (generation begins while Gradio sends the first, empty reply); the
    first batch, and any that ends with something other than text, goes out at once; text is never held longer
    than ``interval``, even while the stream stalls.
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


async def wait_for_model(engine: Engine, limit_s: float) -> AsyncIterator[None]:
    """Yield about every POLL_S while the model is still loading, for at most ``limit_s``; return at once when it
    loaded or failed (the request then proceeds, and the engine says "still loading" or the failure)."""
    deadline = time.monotonic() + limit_s
    while not engine.wait_until_loaded(0) and (left := deadline - time.monotonic()) > 0:
        yield
        await anyio.to_thread.run_sync(engine.wait_until_loaded, min(POLL_S, left))
