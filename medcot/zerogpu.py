"""ZeroGPU glue: the GPU-bound stream decorated with @spaces.GPU; a no-op off ZeroGPU.

The only library module importing `spaces` (spaces/zero/wrappers.py, client.py). The decorated function runs in a
worker forked per GPU, and of its exceptions only gr.Error comes back readable: every check runs here first
(Engine.prepare), and what can fail in the worker becomes gr.Error there. spaces emulates CUDA for the importing
thread only, so the model loads, and its decode step is compiled ahead of time (spaces.aoti_compile), at import.
The stream and Stop plumbing are medcot.gpu_events; the asked duration medcot.gpu_budget; refusals medcot.gpu_refusals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import spaces
from spaces.config import Config as SpacesConfig

from medcot import gpu_refusals
from medcot.engine import Engine
from medcot.errors import UserError
from medcot.events import Finished, StreamEvent
from medcot.gpu_budget import GpuBudget
from medcot.gpu_events import GpuEvents, StopFlags, WorkerStarted, worker_started
from medcot.model.exported_step import AotStep, StepModule, disagreement, export_step
from medcot.model.progress import Progress
from medcot.request import Query, Request, StreamFn
from medcot.static_generation import static_generator

log = logging.getLogger(__name__)

# spaces' gr.Error for a worker that died (its title) or raised something other than gr.Error (its message is then
# the exception's class name): spaces/zero/wrappers.py, generator_function_wrapper.
SPACES_WORKER_ERROR = "ZeroGPU worker error"
SPACES_WORKER_ABORTED = "GPU task aborted"


def on_zero_gpu() -> bool:
    return bool(SpacesConfig.zero_gpu)


def asked_seconds(request: Request, stop_slot: int, seconds: int) -> int:
    """spaces' dynamic duration, called with the GPU function's arguments: the stream computed it (GpuBudget)."""
    return seconds


def readable_errors(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """``events``, with the library's user errors raised as gr.Error, the only kind spaces passes on readable."""
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

    def readable(self, exc: gr.Error) -> gr.Error:
        title = str(getattr(exc, "title", ""))
        if not title.startswith("ZeroGPU"):
            return exc  # the worker's own, readable already (readable_errors)
        if title != SPACES_WORKER_ERROR:  # spaces' refusal before any worker: quota, duration, no GPU, queue
            return gpu_error(gpu_refusals.plain_text(exc.message), title)
        if exc.message != SPACES_WORKER_ABORTED:  # an exception other than gr.Error in the worker: its class name
            log.error("the GPU worker failed: %s", exc.message)
            return gpu_error(gpu_refusals.WORKER_FAILED, "GPU error")
        held = None if self._started_at is None else time.monotonic() - self._started_at + self._startup_s
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
        """In the worker: the request's events (nothing if it was stopped while waiting for this GPU)."""
        if flags.is_set(stop_slot):
            return
        started = worker_started()
        if started.startup_s is not None:
            log.info("ZeroGPU worker: ready in %.1f s, decoding with %s", started.startup_s, decoding(engine))
        yield started
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
    """Load the model: on ZeroGPU at import in this thread (the only one spaces' CUDA emulation covers), else in the
    background so that the page is up at once and shows the load's progress."""
    if on_zero_gpu():
        log.info("ZeroGPU: loading the model onto (emulated) CUDA at import")
        engine.load(on_progress, in_this_thread=True)
        compile_step_ahead(engine)
    else:
        engine.load_in_background(on_progress)
    return engine


# The startup compile's GPU time (one program, or two with an adapter delta, and their check); not yet measured on a
# GPU. It is the Space's own time, not a visitor's quota.
AOT_COMPILE_S = 300


def compile_step_ahead(engine: Engine) -> None:
    """The static decode step compiled on a GPU at import, checked against the eager step's greedy tokens, and put
    in the local backend, which every request's worker inherits. Where it cannot be, one log line says why and
    decoding stays as it was (MEDCOT_DECODE=static keeps the eager step, =generate skips this)."""
    loaded, backend = engine.loaded, engine.backend
    if loaded is None or engine.settings.decode in ("generate", "static"):
        return
    generator = static_generator(loaded.model, loaded.device, loaded.base_delta, "static")
    if generator is None:
        log.warning("ZeroGPU: no decode step compiled ahead of time: the model has no static step (logged above)")
        return
    decoder = generator.decoder
    bases = (False, True) if decoder.deltas is not None else (False,)

    @spaces.GPU(duration=AOT_COMPILE_S)
    def compile_on_gpu() -> tuple[dict[bool, Any], str | None]:
        """In a GPU worker: each program compiled and checked, or why not (an exception would come back as its class
        name alone)."""
        compiled: dict[bool, Any] = {}
        try:
            for base in bases:
                compiled[base] = spaces.aoti_compile(export_step(decoder, base))
                differs = disagreement(decoder, compiled[base], base)
                if differs is not None:
                    return {}, differs
        except Exception as exc:
            return {}, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        return compiled, None

    started = time.monotonic()
    try:
        compiled, failure = compile_on_gpu()
    except Exception as exc:  # spaces could not run it: no GPU, the device API
        compiled, failure = {}, f"{type(exc).__name__}: {gpu_refusals.plain_text(exc) or exc}"
    if failure is not None:
        log.warning("ZeroGPU: the decode step is not compiled ahead of time, %s serves: %s", decoding(engine), failure)
        return
    ready: dict[bool, Any] = {}
    for base, program in compiled.items():
        ready[base] = StepModule(decoder, base)
        spaces.aoti_apply(program, ready[base])  # its forward is now the compiled program
    generator.step = AotStep(decoder, ready, f"compiled ahead of time in {time.monotonic() - started:.0f} s")
    generator.mode = "aoti"
    backend.static = generator  # type: ignore[union-attr]  (a local backend: engine.loaded is set)
    log.info("ZeroGPU: decoding with %s", decoding(engine))


def decoding(engine: Engine) -> str:
    """What decodes the tokens, for the logs."""
    static = getattr(engine.backend, "static", None)
    if static is None:
        return "transformers' generate()"
    return f"the static step ({getattr(static.step, 'status', 'eager')})"
