"""What passes between this process and a ZeroGPU worker besides spaces: the worker's start-up, Stop flags in
shared memory, and a GPU generator's events read while a thread of its own drives it. No spaces or Gradio here.
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
Item = TypeVar("Item")  # what a GPU generator yields: the worker's WorkerStarted, then the answer's events

POLL_S = 0.05  # how often a reader waiting for the GPU's next event looks at its cancel event


@dataclass(frozen=True)
class WorkerStarted:
    """The worker's first item for each request: its start-up (from its fork to this request) when this is the
    first request it serves, else None (a worker spaces reused)."""

    startup_s: float | None


# In a GPU worker until its first request: when spaces forked it (time.monotonic is system-wide).
_forked_at: float | None = None


def _note_fork() -> None:
    global _forked_at
    _forked_at = time.monotonic()


os.register_at_fork(after_in_child=_note_fork)


def worker_started() -> WorkerStarted:
    """In the worker, as a request starts (spaces runs one request at a time in a worker)."""
    global _forked_at
    forked_at, _forked_at = _forked_at, None
    return WorkerStarted(None if forked_at is None else time.monotonic() - forked_at)


class StopFlags:
    """Stop flags in memory shared with the GPU workers (forked after it was made), one slot per request in flight:
    spaces tells a worker to stop only at its next event, which held-back text can delay for long."""

    def __init__(self, size: int = 256) -> None:
        self._flags = multiprocessing.get_context("fork").RawArray("b", size)
        self._free = list(range(size))
        self._lock = threading.Lock()

    def take(self) -> int:
        """A cleared slot for a request, or -1 when all are in use (then the stop waits for the next event)."""
        with self._lock:
            if not self._free:
                return -1
            slot = self._free.pop()
        self._flags[slot] = 0
        return slot

    def give_back(self, slot: int) -> None:
        if slot >= 0:
            with self._lock:
                self._free.append(slot)

    def set(self, slot: int) -> None:
        if slot >= 0:
            self._flags[slot] = 1

    def is_set(self, slot: int) -> bool:
        return slot >= 0 and bool(self._flags[slot])

    def watch(self, slot: int, cancel: threading.Event, done: threading.Event) -> None:
        """In the worker, for one request: set ``cancel`` when the slot is set, until ``done``."""
        while not done.wait(POLL_S / 5):
            if self.is_set(slot):
                cancel.set()
                return


class GpuEvents(Generic[Item]):
    """The events of a GPU generator, read here while a thread of its own ("medcot-gpu") drives it.

    The reader stops within POLL_S of ``cancel`` (also while the GPU is still awaited) and sets the request's stop
    flag; the driving thread then closes the generator, which waits on spaces' worker with nobody waiting for it.
    The thread runs in the reader's contextvars: spaces reads Gradio's request (the quota token) from them.
    """

    _END = object()

    def __init__(self, start: Callable[[int], Iterator[Item]], cancel: threading.Event, flags: StopFlags) -> None:
        self._items: queue.Queue[Any] = queue.Queue()
        self._cancel = cancel
        self._flags = flags
        self._slot = flags.take()
        self._users = 2  # the reader and the driving thread: the slot is given back when both are done with it
        self._users_lock = threading.Lock()
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._drive, start), name="medcot-gpu", daemon=True).start()

    def _done_with_slot(self) -> None:
        with self._users_lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self._flags.give_back(self._slot)

    def _drive(self, start: Callable[[int], Iterator[Item]]) -> None:
        events: Iterator[Item] | None = None
        try:
            if self._cancel.is_set():
                return  # stopped before its turn: no GPU is asked for
            events = start(self._slot)
            for event in events:
                self._items.put(event)
                if self._cancel.is_set():
                    break
        except BaseException as exc:
            self._items.put(exc)
        finally:
            try:
                if events is not None:
                    events.close()  # spaces tells its worker to stop and waits for it here
            except Exception:
                log.exception("closing the GPU generator failed")
            self._items.put(self._END)
            self._done_with_slot()

    def __iter__(self) -> Iterator[Item]:
        try:
            while True:
                try:
                    item = self._items.get(timeout=POLL_S)
                except queue.Empty:
                    if self._cancel.is_set():
                        self._flags.set(self._slot)
                        return
                    continue
                if item is self._END:
                    return
                if self._cancel.is_set():
                    self._flags.set(self._slot)
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._cancel.set()  # however the reader ended (closed early too), the driving thread stops the worker
            self._done_with_slot()
