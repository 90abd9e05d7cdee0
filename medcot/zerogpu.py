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
- Each request asks a duration (medcot.gpu_budget, from the speed measured on earlier answers: the worker reports
  its start-up, the answers' Stats their speed). spaces refuses a request in this process, before any worker, with a
  gr.Error (spaces/zero/client.py `schedule`: quota exceeded, duration over the cap, no GPU, a queue timeout whose
  message is HTML), and turns a worker that died (ZeroGPU stops one that runs past its duration) into a gr.Error
  titled "ZeroGPU worker error". Those come out of the stream as plain readable text (MeteredRun, gpu_refusals),
  never HTML or a class name.
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

import gradio as gr
import spaces
from spaces.config import Config as SpacesConfig

from medcot import gpu_refusals
from medcot.engine import Engine
from medcot.errors import UserError
from medcot.events import Finished, StreamEvent, StreamFn
from medcot.gpu_budget import GpuBudget
from medcot.model.progress import Progress
from medcot.request import Query, Request

log = logging.getLogger(__name__)
Item = TypeVar("Item")  # what a GPU generator yields: the worker's WorkerStarted, then the answer's events

POLL_S = 0.05  # how often a reader waiting for the GPU's next event looks at its cancel event
# spaces' gr.Error for a worker that died (its title) or raised something other than gr.Error (its message is then
# the exception's class name): spaces/zero/wrappers.py, generator_function_wrapper.
SPACES_WORKER_ERROR = "ZeroGPU worker error"
SPACES_WORKER_ABORTED = "GPU task aborted"


def on_zero_gpu() -> bool:
    return bool(SpacesConfig.zero_gpu)


def asked_seconds(request: Request, stop_slot: int, seconds: int) -> int:
    """spaces' dynamic duration: called with the GPU function's arguments before each /schedule; the stream
    computed it (GpuBudget) and passes it along, so that it can say what was asked if the answer is cut."""
    return seconds


@dataclass(frozen=True)
class WorkerStarted:
    """The worker's first item for each request: its start-up (from its fork to this request's start, the weights
    moved to the GPU) when this is the first request the worker serves, else None (a worker spaces reused)."""

    startup_s: float | None


_forked_at: float | None = None  # in a GPU worker: when spaces forked it (time.monotonic is system-wide)
_served_one = False


def _note_fork() -> None:
    global _forked_at, _served_one
    _forked_at, _served_one = time.monotonic(), False


os.register_at_fork(after_in_child=_note_fork)


def worker_started() -> WorkerStarted:
    """In the worker, as a request starts (spaces runs one request at a time in a worker)."""
    global _served_one
    first = not _served_one and _forked_at is not None
    _served_one = True
    return WorkerStarted(time.monotonic() - _forked_at if first and _forked_at is not None else None)


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


class GpuEvents(Generic[Item]):
    """The events of a GPU generator, read here while a thread of its own ("medcot-gpu") drives it.

    The reader stops as soon as ``cancel`` is set (within POLL_S), whether the GPU is still being waited for or the
    worker is between events, and sets the request's stop flag, which ends the generation in the worker at its next
    token. The driving thread then closes the generator, which spaces forwards to its worker and waits on until the
    GPU is released; nobody waits for that. The driving thread runs in the reader's context (contextvars): spaces
    reads Gradio's request from it (the user's ZeroGPU quota token).
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
        self._thread = threading.Thread(target=context.run, args=(self._drive, start), name="medcot-gpu", daemon=True)
        self._thread.start()

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


def readable_errors(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """``events``, with the library's user errors raised as gr.Error: of a worker's exceptions, only gr.Error comes
    back out of spaces with its message (the others become "ZeroGPU worker error" and the exception's class name)."""
    try:
        yield from events
    except UserError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


class MeteredRun:
    """One request's GPU events as the UI takes them: the worker's start-up and each answer's Stats fed to the
    budget, and spaces' refusals and a dead worker as readable gr.Errors (gpu_refusals)."""

    # A worker that died after holding the GPU for this share of its asked duration was cut at that duration (the
    # held time is measured here from the worker's first event plus the start-up it reported: a little short).
    CUT_FRACTION = 0.8

    def __init__(self, budget: GpuBudget, asked_s: int, max_new_tokens: int) -> None:
        self.budget, self.asked_s, self.max_new_tokens = budget, asked_s, max_new_tokens
        self._started_at: float | None = None
        self._startup_s = 0.0

    def events(self, items: Iterator[StreamEvent | WorkerStarted]) -> Iterator[StreamEvent]:
        try:
            for item in items:
                if isinstance(item, WorkerStarted):
                    self._started_at = time.monotonic()
                    if item.startup_s is not None:
                        self._startup_s = item.startup_s
                        self.budget.observe_startup(item.startup_s)
                    continue
                if isinstance(item, Finished):
                    self.budget.observe_answer(item.stats)
                yield item
        except gr.Error as exc:
            raise self.readable(exc) from None
        except UserError:
            raise
        except Exception as exc:  # spaces' own failures to schedule (an HTTP error of the device API, ...)
            log.exception("ZeroGPU could not run the request")
            reason = gpu_refusals.plain_text(exc) or "no reason given"
            raise gpu_error(gpu_refusals.NOT_SCHEDULED.format(reason=reason), "No GPU") from None

    def held_s(self) -> float | None:
        return None if self._started_at is None else time.monotonic() - self._started_at + self._startup_s

    def readable(self, exc: gr.Error) -> gr.Error:
        title = str(getattr(exc, "title", ""))
        if not title.startswith("ZeroGPU"):
            return exc  # the worker's own, readable already (readable_errors)
        if title != SPACES_WORKER_ERROR:  # spaces' refusal before any worker: quota, duration, no GPU, queue
            return gpu_error(gpu_refusals.plain_text(exc.message), title)
        if exc.message != SPACES_WORKER_ABORTED:  # an exception other than gr.Error in the worker: its class name
            log.error("the GPU worker failed: %s", exc.message)
            return gpu_error(gpu_refusals.WORKER_FAILED, "GPU error")
        held = self.held_s()
        cut, message = gpu_refusals.cut_or_failed(self.asked_s, held, self.CUT_FRACTION)
        log.warning("ZeroGPU ended the worker after %s s of the %d s asked (cut: %s)", held, self.asked_s, cut)
        if cut and held is not None:
            self.budget.observe_cut(held, self.max_new_tokens)
        return gpu_error(message, "GPU time ran out" if cut else "GPU stopped")


def gpu_error(message: str, title: str) -> gr.Error:
    """A ZeroGPU refusal for the page (a toast that stays until closed: it says how long to wait) and the API."""
    return gr.Error(message, title=title, duration=None, print_exception=False)


def gpu_stream(engine: Engine, budget: GpuBudget | None = None) -> StreamFn:
    """engine.stream wrapped in @spaces.GPU with a per-request duration (engine.stream itself off ZeroGPU, and in
    server mode, where the model server does the GPU work)."""
    if not on_zero_gpu() or engine.settings.server_mode:
        return engine.stream

    flags = StopFlags()  # made before spaces forks any worker
    budget = budget if budget is not None else GpuBudget()

    @spaces.GPU(duration=asked_seconds)
    def on_gpu(request: Request, stop_slot: int, seconds: int) -> Iterator[StreamEvent | WorkerStarted]:
        """In the worker: the request's events (nothing if it was stopped while waiting for this GPU). ``seconds``
        is for spaces (asked_seconds), which calls the duration function with these arguments."""
        if flags.is_set(stop_slot):
            return
        yield worker_started()
        cancel, done = threading.Event(), threading.Event()
        threading.Thread(target=flags.watch, args=(stop_slot, cancel, done), name="medcot-stop-watch").start()
        try:
            yield from readable_errors(engine.generate(request, cancel))
        finally:
            done.set()

    def stream(query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        request = engine.prepare(query)  # a refusal costs no GPU
        cancel = cancel if cancel is not None else threading.Event()
        tokens = request.params.max_new_tokens
        figures = budget.figures()
        seconds = figures.seconds_for(tokens)
        log.info("ZeroGPU: asking %d s for up to %d tokens (%s)", seconds, tokens, figures.describe())
        run = MeteredRun(budget, seconds, tokens)
        yield from run.events(GpuEvents(lambda slot: on_gpu(request, slot, seconds), cancel, flags))

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
