"""ZeroGPU glue: the GPU-bound stream decorated with @spaces.GPU; a no-op off ZeroGPU.

Kept apart from the library (which never imports `spaces`) and from the UI (which only sees a stream function).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import spaces
from spaces.config import Config as SpacesConfig

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import StreamEvent, StreamFn
from medcot.prompt import Turn

log = logging.getLogger(__name__)

# Seconds of GPU a request may hold: start-up plus a pessimistic decode rate for the 270M on a ZeroGPU slice.
GPU_BASE_SECONDS = 15
GPU_SECONDS_PER_TOKEN = 0.04
GPU_MAX_SECONDS = 120  # ZeroGPU quotas are minutes a day: never ask for more than two


def on_zero_gpu() -> bool:
    return bool(SpacesConfig.zero_gpu)


def gpu_seconds(
    question: str, history: Sequence[Turn] = (), params: GenerationParams | None = None, use_adapter: bool = True
) -> int:
    """ZeroGPU duration for one request, from its token budget (shorter requests get better queue priority)."""
    max_new_tokens = (params or GenerationParams()).max_new_tokens
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + max_new_tokens * GPU_SECONDS_PER_TOKEN))


def gpu_stream(engine: Engine) -> StreamFn:
    """engine.stream wrapped in @spaces.GPU with a per-request duration (engine.stream itself off ZeroGPU)."""
    if not on_zero_gpu():
        return engine.stream

    @spaces.GPU(duration=gpu_seconds)
    def on_gpu(
        question: str, history: Sequence[Turn] = (), params: GenerationParams | None = None, use_adapter: bool = True
    ) -> Iterator[StreamEvent]:
        yield from engine.stream(question, history, params, use_adapter)

    def stream(
        question: str,
        history: Sequence[Turn] = (),
        params: GenerationParams | None = None,
        use_adapter: bool = True,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamEvent]:
        # On ZeroGPU the generator runs in another process, where this event cannot go: check it as each event
        # arrives (before handing it on, since after a Stop nobody asks for another) and close the GPU generator
        # from the thread iterating it, which spaces forwards to its worker.
        events = on_gpu(question, history, params, use_adapter)
        try:
            for event in events:
                if cancel is not None and cancel.is_set():
                    break
                yield event
        finally:
            events.close()

    return stream


def start_engine(engine: Engine) -> Engine:
    """Load the model: at import on ZeroGPU (its docs require CUDA placement there), else in the background
    so the page is up at once and shows the load's progress."""
    if on_zero_gpu():
        log.info("ZeroGPU: loading the model onto CUDA at import")
        engine.load()
    else:
        engine.load_in_background()
    return engine
