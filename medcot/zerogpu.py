"""ZeroGPU glue: the GPU-bound stream decorated with @spaces.GPU; a no-op off ZeroGPU.

Kept apart from the library (which never imports `spaces`) and from the UI (which only sees a stream function).
What spaces does, and this module designs against (spaces/zero/wrappers.py, spaces/zero/torch/patching.py):

- The decorated function runs in a worker process forked per GPU, not here; its arguments and results are pickled,
  and of its exceptions only gr.Error comes back readable (anything else becomes "ZeroGPU worker error" and a GPU
  released as failed, the worker thrown away). So every check runs here first (Engine.prepare), before a GPU is asked
  for, and what can only fail in the worker is turned into gr.Error there.
- In this process spaces emulates CUDA for the importing thread only: the model loads in it, at import.
- Closing spaces' generator waits for the worker's next event. It is driven from a thread of its own (GpuEvents), so
  that a Stop is answered at once, also while the GPU is still being waited for, and the close never runs on the
  event loop or in the reader's thread. The Stop reaches the worker's generation through shared memory (StopFlags).
"""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import spaces
from spaces.config import Config as SpacesConfig

from medcot.engine import Engine
from medcot.errors import UserError
from medcot.events import StreamEvent
from medcot.model.progress import Progress
from medcot.request import Query, Request, StreamFn

log = logging.getLogger(__name__)

# Seconds of GPU a request may hold: start-up plus a pessimistic decode rate for the 270M on a ZeroGPU slice.
GPU_BASE_SECONDS = 15
GPU_SECONDS_PER_TOKEN = 0.04
GPU_MAX_SECONDS = 120  # ZeroGPU quotas are minutes a day: never ask for more than two
POLL_S = 0.05  # how often a reader waiting for the GPU's next event looks at its cancel event


def on_zero_gpu() -> bool:
    return bool(SpacesConfig.zero_gpu)


def gpu_seconds(max_new_tokens: int) -> int:
    """ZeroGPU duration for one request, from its token budget (shorter requests get better queue priority)."""
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + max_new_tokens * GPU_SECONDS_PER_TOKEN))


def request_gpu_seconds(request: Request, *_: Any) -> int:
    """spaces' dynamic duration: called with the GPU function's arguments before each /schedule."""
    return gpu_seconds(request.params.max_new_tokens)


class StopFlags:
    """Stop flags in memory shared with the GPU workers, one slot per request in flight.

    spaces tells its worker to stop only at the worker's next event, and text held back (whitespace, a possible stop
    text) can leave a generation without events for long. These flags reach the generation itself: spaces forks its
    workers from this process, after this memory was made, so they share it; the worker's request watches its slot.
    """

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


class GpuEvents:
    """The events of a GPU generator, read here while a thread of its own ("medcot-gpu") drives it.

    The reader stops as soon as ``cancel`` is set (within POLL_S), whether the GPU is still being waited for or the
    worker is between events, and sets the request's stop flag, which ends the generation in the worker at its next
    token. The driving thread then closes the generator, which spaces forwards to its worker and waits on until the
    GPU is released; nobody waits for that. The driving thread runs in the reader's context (contextvars): spaces
    reads Gradio's request from it (the user's ZeroGPU quota token).
    """

    _END = object()

    def __init__(
        self, start: Callable[[int], Iterator[StreamEvent]], cancel: threading.Event, flags: StopFlags
    ) -> None:
        self._items: queue.Queue[Any] = queue.Queue()
        self._cancel = cancel
        self._flags = flags
        self._slot = flags.take()
        self._users = 2  # the reader and the driving thread: the slot is given back when both are done with it
        self._users_lock = threading.Lock()
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._drive, start), name="medcot-gpu", daemon=True)
        self._thread.start()

    def _done_with_slot(self) -> None:
        with self._users_lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self._flags.give_back(self._slot)

    def _drive(self, start: Callable[[int], Iterator[StreamEvent]]) -> None:
        events: Iterator[StreamEvent] | None = None
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

    def __iter__(self) -> Iterator[StreamEvent]:
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


def readable_errors(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """``events``, with the library's user errors raised as gr.Error: of a worker's exceptions, only gr.Error comes
    back out of spaces with its message (the others become "ZeroGPU worker error" and the exception's class name)."""
    try:
        yield from events
    except UserError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def gpu_stream(engine: Engine) -> StreamFn:
    """engine.stream wrapped in @spaces.GPU with a per-request duration (engine.stream itself off ZeroGPU, and in
    server mode, where the model server does the GPU work)."""
    if not on_zero_gpu() or engine.settings.server_mode:
        return engine.stream

    flags = StopFlags()  # made before spaces forks any worker

    @spaces.GPU(duration=request_gpu_seconds)
    def on_gpu(request: Request, stop_slot: int) -> Iterator[StreamEvent]:
        """In the worker: the request's events (nothing if it was stopped while waiting for this GPU)."""
        if flags.is_set(stop_slot):
            return
        cancel, done = threading.Event(), threading.Event()
        threading.Thread(target=flags.watch, args=(stop_slot, cancel, done), name="medcot-stop-watch").start()
        try:
            yield from readable_errors(engine.generate(request, cancel))
        finally:
            done.set()

    def stream(query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        request = engine.prepare(query)  # a refusal costs no GPU
        cancel = cancel if cancel is not None else threading.Event()
        yield from GpuEvents(lambda slot: on_gpu(request, slot), cancel, flags)

    return stream


def start_engine(engine: Engine, on_progress: Progress | None = None) -> Engine:
    """Load the model: at import on ZeroGPU, in the importing thread (the only one spaces' CUDA emulation covers;
    spaces then packs the weights for its GPU workers at launch), else in the background so that the page is up at
    once and shows the load's progress (``on_progress`` gets it too: the terminal's lines)."""
    if on_zero_gpu():
        log.info("ZeroGPU: loading the model onto (emulated) CUDA at import")
        engine.load(on_progress, in_this_thread=True)
    else:
        engine.load_in_background(on_progress)
    return engine
